"""From a GenerateRequest to engine input, and from engine output to choice deltas.

`build_plan` is the single wire-to-engine conversion: prompts rendered and
tokenised, sampling parameters, structured output for response_format and forced
tool calls, logprob counts. `ChoiceAssembler` turns one prompt's engine outputs
into ChoiceDeltas: choice indices, echo, logprobs, and tool calls (text is held
back while a tool call may be forming, then released as content or as calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deployments.contract import ChoiceDelta, GenerateRequest, TokenLogprob
from deployments.llm import tools as tool_logic
from deployments.llm.vllm_engine import convert_logprobs

ToolMode = Literal["text", "parse", "forced"]


@dataclass
class Plan:
    prompts: list[list[int]]
    params: Any  # vLLM SamplingParams
    n: int
    logprobs: int | None
    echo_texts: list[str] | None
    tool_mode: ToolMode
    tools: list[dict[str, Any]] | None
    tool_choice: Any
    tool_parser: Any = None
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(len(p) for p in self.prompts)

    @staticmethod
    def engine_request_id(request_id: str, prompt_index: int) -> str:
        return request_id if prompt_index == 0 else f"{request_id}-p{prompt_index}"


def _tool_mode(request: GenerateRequest, tool_parser: Any) -> ToolMode:
    if not request.tools or request.tool_choice == "none":
        return "text"
    if tool_logic.is_forced(request.tools, request.tool_choice):
        return "forced"
    return "parse" if tool_parser is not None else "text"


def build_plan(engine: Any, request: GenerateRequest, tool_parser: Any = None) -> Plan:
    """Raises PromptTooLong, ValueError (bad ids, bad tool_choice) or template errors."""
    mode = _tool_mode(request, tool_parser)
    if request.kind == "chat":
        # "none" hides the tools from the model; otherwise templates that know tools
        # render them, whichever mode reads the answer.
        show_tools = request.tools if request.tool_choice != "none" else None
        prompts = [engine.render_chat(request.messages or [], show_tools)]
    else:
        prompts = []
        for prompt in request.prompts:
            if isinstance(prompt, str):
                prompts.append(engine.encode(prompt))
            else:
                engine.check_token_ids(prompt)
                prompts.append(list(prompt))
    schema = None
    if mode == "forced":
        schema = tool_logic.forced_schema(request.tools or [], request.tool_choice,
                                          request.parallel_tool_calls)
    elif request.response_format and request.response_format.get("type") == "json_schema":
        schema = request.response_format.get("schema") or {"type": "object"}
    json_object = bool(request.response_format) and request.response_format.get("type") == "json_object"
    k = request.logprobs
    echo = request.kind == "completion" and request.echo
    params = engine.sampling_params(
        request.sampling, max(len(p) for p in prompts), logprobs=k,
        prompt_logprobs=k if (echo and k is not None) else None,
        json_schema=schema, json_object=json_object,
    )
    echo_texts = None
    if echo:
        echo_texts = [p if isinstance(p, str) else engine.decode(p) for p in request.prompts]
    return Plan(prompts=prompts, params=params, n=request.sampling.n, logprobs=k,
                echo_texts=echo_texts, tool_mode=mode, tools=request.tools,
                tool_choice=request.tool_choice, tool_parser=tool_parser)


class ChoiceAssembler:
    """Engine outputs of one prompt → ChoiceDeltas with request-wide indices."""

    def __init__(self, plan: Plan, prompt_index: int) -> None:
        self.plan = plan
        self.offset = prompt_index * plan.n
        self.prompt_index = prompt_index
        self._started: set[int] = set()
        self._held: dict[int, list[str]] = {}

    def _echo(self, out: Any) -> tuple[str, list[TokenLogprob] | None]:
        plan = self.plan
        if plan.echo_texts is None:
            return "", None
        text = plan.echo_texts[self.prompt_index]
        if plan.logprobs is None or out.prompt_logprobs is None:
            return text, None
        prompt_ids = plan.prompts[self.prompt_index]
        return text, convert_logprobs(prompt_ids, out.prompt_logprobs, plan.logprobs)

    def step(self, out: Any) -> list[ChoiceDelta]:
        deltas = []
        for o in out.outputs:
            index = self.offset + o.index
            text, lps = o.text, None
            if self.plan.logprobs is not None and o.logprobs:
                lps = convert_logprobs(o.token_ids, o.logprobs, self.plan.logprobs)
            if index not in self._started:
                self._started.add(index)
                echo_text, echo_lps = self._echo(out)
                text = echo_text + text
                if echo_lps is not None:
                    lps = echo_lps + (lps or [])
            delta = ChoiceDelta(index, text, len(o.token_ids), o.finish_reason, lps)
            if self.plan.tool_mode != "text":
                delta = self._hold_for_tools(delta)
            if delta is not None:
                deltas.append(delta)
        return deltas

    def _hold_for_tools(self, delta: ChoiceDelta) -> ChoiceDelta | None:
        """Keeps text back until the choice ends, then decides: calls or content."""
        held = self._held.setdefault(delta.index, [])
        held.append(delta.text)
        if delta.finish_reason is None:
            return None if not delta.logprobs else ChoiceDelta(
                delta.index, "", delta.num_tokens, None, delta.logprobs)
        text = "".join(held)
        calls, content = None, text
        if self.plan.tool_mode == "forced":
            calls = tool_logic.calls_from_forced_output(text, self.plan.tool_choice)
            content = "" if calls else text
        else:
            parsed, found = self.plan.tool_parser.extract(text, self.plan.tools or [])
            calls, content = (found or None), (parsed or "")
        reason = "tool_calls" if calls else delta.finish_reason
        return ChoiceDelta(delta.index, content, delta.num_tokens, reason, delta.logprobs, calls)
