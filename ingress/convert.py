"""Wire requests → the neutral GenerateRequest the LLM deployment takes, and neutral
results → wire pieces (logprobs, tool calls). One function per direction and
endpoint, so every field mapping is in one visible place."""

from __future__ import annotations

from deployments.contract import GenerateRequest, SamplingOptions, TokenLogprob, ToolCall
from ingress.wire.chat import (
    ChatCompletionRequest,
    ChatLogprobs,
    FunctionCall,
    NamedToolChoice,
    TokenLogprobWire,
    ToolCallDelta,
    ToolCallWire,
    TopLogprob,
)
from ingress.wire.completions import CompletionLogprobs, CompletionRequest
from ingress.wire.sampling import SamplingFields


def _sampling(req: SamplingFields, max_tokens: int | None) -> SamplingOptions:
    return SamplingOptions(
        n=req.n,
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=req.stop_list(),
        stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=req.ignore_eos,
    )


def chat_request(req: ChatCompletionRequest, request_id: str) -> GenerateRequest:
    choice = req.tool_choice
    tool_choice = choice.model_dump() if isinstance(choice, NamedToolChoice) else choice
    return GenerateRequest(
        request_id=request_id,
        task="chat",
        messages=[m.to_template_dict() for m in req.messages],
        logprobs=req.logprob_count(),
        tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
        tool_choice=tool_choice if req.tools else None,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=req.response_format.to_contract() if req.response_format else None,
        sampling=_sampling(req, req.effective_max_tokens()),
    )


def completion_request(req: CompletionRequest, request_id: str) -> GenerateRequest:
    return GenerateRequest(
        request_id=request_id,
        task="completion",
        prompts=req.prompt_list(),
        echo=req.echo,
        logprobs=req.logprobs,
        response_format=req.response_format.to_contract() if req.response_format else None,
        sampling=_sampling(req, req.max_tokens),
    )


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(lps: list[TokenLogprob] | None) -> ChatLogprobs | None:
    if lps is None:
        return None
    return ChatLogprobs(
        content=[
            TokenLogprobWire(
                token=lp.token,
                logprob=lp.logprob if lp.logprob is not None else -9999.0,
                bytes=_bytes(lp.token),
                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=_bytes(t)) for t, v in lp.top],
            )
            for lp in lps
        ]
    )


def completion_logprobs(
    lps: list[TokenLogprob] | None, offset: int = 0
) -> CompletionLogprobs | None:
    """OpenAI's completions shape; `offset` is where this text starts in the choice."""
    if lps is None:
        return None
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in lps],
        token_logprobs=[lp.logprob for lp in lps],
        top_logprobs=[dict(lp.top) if lp.logprob is not None else None for lp in lps],
        text_offset=offsets,
    )


def tool_calls(calls: list[ToolCall] | None) -> list[ToolCallWire] | None:
    if not calls:
        return None
    return [
        ToolCallWire(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
        for c in calls
    ]


def tool_call_deltas(calls: list[ToolCall]) -> list[ToolCallDelta]:
    return [
        ToolCallDelta(
            index=i,
            id=c.id,
            type="function",
            function=FunctionCall(name=c.name, arguments=c.arguments),
        )
        for i, c in enumerate(calls)
    ]
