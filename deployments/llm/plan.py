"""From a GenerateRequest to engine input, and from engine output to choice deltas.

`build_plan` is the single wire-to-engine conversion: prompts rendered and
tokenised, sampling parameters, structured output for response_format and forced
tool calls, logprob counts, and the model's bounds on one request (LLMLimits:
sequences, prompt tokens, max_tokens, ignore_eos, logprob volume). `ChoiceAssembler` turns one prompt's engine outputs
into ChoiceDeltas: choice indices, echo, logprobs, and tool calls (text is held
back while a tool call may be forming, then released as content or as calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from deployments.contract import ChoiceDelta, GenerateRequest, TokenLogprob
from deployments.errors import InvalidInput
from deployments.llm import tools as tool_logic
from deployments.llm.config import LLMLimits
from deployments.llm.vllm_engine import convert_logprobs

if TYPE_CHECKING:  # engines.py imports the configs; plan.py needs only the types
    from deployments.engines import EngineStep, LLMEngine, ToolParser

ToolMode = Literal["text", "parse", "forced"]


@dataclass
class Plan:
    """One request as engine input: what build_plan decided, read by the assembler."""

    prompts: list[list[int]]
    params: Any  # the engine's own sampling parameters (vLLM SamplingParams)
    n: int
    logprobs: int | None
    echo_texts: list[str] | None
    tool_mode: ToolMode
    tools: list[dict[str, Any]] | None
    tool_choice: Any
    tool_parser: ToolParser | None = None
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(len(p) for p in self.prompts)

    @staticmethod
    def engine_request_id(request_id: str, prompt_index: int) -> str:
        """The engine's id for one prompt of a request (ids must be unique there)."""
        return request_id if prompt_index == 0 else f"{request_id}-p{prompt_index}"


def _tool_mode(request: GenerateRequest, tool_parser: ToolParser | None) -> ToolMode:
    if not request.tools or request.tool_choice == "none":
        return "text"
    if tool_logic.is_forced(request.tools, request.tool_choice):
        return "forced"
    return "parse" if tool_parser is not None else "text"


def build_plan(
    engine: LLMEngine,
    request: GenerateRequest,
    tool_parser: ToolParser | None = None,
    limits: LLMLimits | None = None,
) -> Plan:
    """Turns a request into engine input, within the model's limits. Blocking (chat
    template, tokenizer): the server runs it in a worker thread.

    Args:
        engine: the started engine (templates, tokenizer, sampling parameters).
        request: the request as the ingress sent it.
        tool_parser: the model's tool-call parser, if the config names one.
        limits: the model's bounds on one request; None: the defaults.

    Returns:
        The plan: one token-id prompt per prompt, and how to read the output.

    Raises:
        PromptTooLong: a prompt leaves no room for the output.
        InvalidInput: a bound of `limits` is passed (sequences, prompt tokens,
            max_tokens, ignore_eos, logprobs), or bad token ids or tool_choice.
        ValueError: an option the engine refuses.
        jinja2.TemplateError: the chat template rejects the messages.
    """
    limits = limits or LLMLimits()
    chat = request.task == "chat"
    prompt_count = 1 if chat else len(request.prompts)
    _check_sequences(limits, prompt_count * request.sampling.n)
    mode = _tool_mode(request, tool_parser)
    prompts = _tokenize(engine, request, limits)
    response_format = request.response_format or {}
    schema = None
    if mode == "forced":
        schema = tool_logic.forced_schema(
            request.tools or [], request.tool_choice, request.parallel_tool_calls
        )
    elif response_format.get("type") == "json_schema":
        schema = response_format.get("schema") or {"type": "object"}
    json_object = response_format.get("type") == "json_object"
    k = request.logprobs
    echo = not chat and request.echo
    longest = max(len(p) for p in prompts)
    room = engine.max_model_len - longest
    cap = min(limits.max_tokens or engine.max_model_len, engine.max_model_len)
    sampling = request.sampling
    if sampling.max_tokens is None and 1 <= cap < room:
        sampling = sampling.model_copy(update={"max_tokens": cap})
    params = engine.sampling_params(
        sampling,
        longest,
        logprobs=k,
        prompt_logprobs=k if (echo and k is not None) else None,
        json_schema=schema,
        json_object=json_object,
    )
    max_tokens = sampling.max_tokens if sampling.max_tokens is not None else room
    _check_output(limits, request, prompts, cap, max_tokens)
    echo_texts = None
    if echo:
        echo_texts = [p if isinstance(p, str) else engine.decode(p) for p in request.prompts]
    return Plan(
        prompts=prompts,
        params=params,
        n=request.sampling.n,
        logprobs=k,
        echo_texts=echo_texts,
        tool_mode=mode,
        tools=request.tools,
        tool_choice=request.tool_choice,
        tool_parser=tool_parser,
    )


def _check_sequences(limits: LLMLimits, sequences: int) -> None:
    """Before anything is tokenised: prompts × n."""
    if sequences > limits.max_sequences_per_request:
        raise InvalidInput(
            f"This request asks for {sequences} sequences (prompts × n); this model "
            f"allows at most {limits.max_sequences_per_request} per request. Lower n, or "
            "split the prompts over several requests.",
            parameter="n",
            code="invalid_value",
        )


def _tokenize(engine: LLMEngine, request: GenerateRequest, limits: LLMLimits) -> list[list[int]]:
    """The prompts as token ids, stopping as soon as they pass the prompt-token bound."""
    limit = limits.max_prompt_tokens_per_request or 4 * engine.max_model_len
    param = "messages" if request.task == "chat" else "prompt"
    too_many = InvalidInput(
        f"The {param} of this request come to more than {limit} tokens; this model "
        f"takes at most {limit} prompt tokens per request. Shorten them, or split them "
        "over several requests.",
        parameter=param,
        code="invalid_value",
    )
    if request.task == "chat":
        # "none" hides the tools from the model; otherwise templates that know tools
        # render them, whichever mode reads the answer.
        show_tools = request.tools if request.tool_choice != "none" else None
        prompt = engine.render_chat(request.messages or [], show_tools)
        if len(prompt) > limit:
            raise too_many
        return [prompt]
    prompts: list[list[int]] = []
    total = 0
    for text_or_ids in request.prompts:
        if isinstance(text_or_ids, str):
            ids = engine.encode(text_or_ids)
        else:
            engine.check_token_ids(text_or_ids)
            ids = list(text_or_ids)
        total += len(ids)
        if total > limit:
            raise too_many
        prompts.append(ids)
    return prompts


def _check_output(
    limits: LLMLimits,
    request: GenerateRequest,
    prompts: list[list[int]],
    cap: int,
    max_tokens: int,
) -> None:
    """The bounds on what the request generates: max_tokens, ignore_eos, logprobs.

    Args:
        limits: the model's bounds.
        request: the request.
        prompts: its prompts as token ids.
        cap: the model's cap on max_tokens (its context at most).
        max_tokens: the request's max_tokens, or the default it gets.
    """
    sampling = request.sampling
    if sampling.max_tokens is not None and sampling.max_tokens > cap:
        raise InvalidInput(
            f"max_tokens is {sampling.max_tokens}; this model allows at most {cap}. "
            "Lower it, or leave it out to get up to that many.",
            parameter="max_tokens",
            code="invalid_value",
        )
    sequences = len(prompts) * sampling.n
    if sampling.ignore_eos and sequences * max_tokens > cap:
        raise InvalidInput(
            f"ignore_eos makes every sequence run to max_tokens: {sequences} sequences × "
            f"{max_tokens} tokens is more than the {cap} tokens this model generates per "
            "request under ignore_eos. Lower max_tokens or n, or drop ignore_eos.",
            parameter="ignore_eos",
            code="invalid_value",
        )
    k = request.logprobs
    if k is None:
        return
    echoed = sum(len(p) for p in prompts) if request.task == "completion" and request.echo else 0
    entries = sampling.n * (len(prompts) * max_tokens + echoed) * (k + 1)
    if entries > limits.max_logprob_entries:
        param = "top_logprobs" if request.task == "chat" and k else "logprobs"
        raise InvalidInput(
            f"This request could return {entries} logprob entries ({sequences} "
            f"sequences × {max_tokens} tokens{' plus the echoed prompts' if echoed else ''}"
            f", {k + 1} per token); this model allows at most "
            f"{limits.max_logprob_entries}. Lower max_tokens, n or the number of top "
            "logprobs.",
            parameter=param,
            code="invalid_value",
        )


class ChoiceAssembler:
    """Engine outputs of one prompt → ChoiceDeltas with request-wide indices."""

    def __init__(self, plan: Plan, prompt_index: int) -> None:
        self.plan = plan
        self.offset = prompt_index * plan.n
        self.prompt_index = prompt_index
        self._started: set[int] = set()
        self._held: dict[int, list[str]] = {}

    def _echo(self, out: EngineStep) -> tuple[str, list[TokenLogprob] | None]:
        plan = self.plan
        if plan.echo_texts is None:
            return "", None
        text = plan.echo_texts[self.prompt_index]
        if plan.logprobs is None or out.prompt_logprobs is None:
            return text, None
        prompt_ids = plan.prompts[self.prompt_index]
        return text, convert_logprobs(prompt_ids, out.prompt_logprobs, plan.logprobs)

    def step(self, out: EngineStep) -> list[ChoiceDelta]:
        """The deltas of one engine step; a choice's text may be held back (tools)."""
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
            delta = ChoiceDelta(index, text, o.finish_reason, lps)
            shown = delta if self.plan.tool_mode == "text" else self._hold_for_tools(delta)
            if shown is not None:
                deltas.append(shown)
        return deltas

    def _hold_for_tools(self, delta: ChoiceDelta) -> ChoiceDelta | None:
        """Keeps text back until the choice ends, then decides: calls or content."""
        held = self._held.setdefault(delta.index, [])
        held.append(delta.text)
        if delta.finish_reason is None:
            # Logprobs are not held: they describe tokens, not the answer's form.
            return (
                None if not delta.logprobs else ChoiceDelta(delta.index, "", None, delta.logprobs)
            )
        text = "".join(held)
        calls, content = None, text
        if self.plan.tool_mode == "forced":
            calls = tool_logic.calls_from_forced_output(text, self.plan.tool_choice)
            content = "" if calls else text
        elif self.plan.tool_parser is not None:  # "parse" mode always has one
            parsed, found = self.plan.tool_parser.extract(text, self.plan.tools or [])
            calls, content = (found or None), (parsed or "")
        reason = "tool_calls" if calls else delta.finish_reason
        return ChoiceDelta(delta.index, content, reason, delta.logprobs, calls)
