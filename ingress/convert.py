"""Wire requests → the neutral GenerateRequest the LLM deployment takes (one function
per endpoint, so every field mapping is in one visible place)."""

from __future__ import annotations

from deployments.contract import GenerateRequest, SamplingOptions
from ingress.wire import ChatCompletionRequest, CompletionRequest, SamplingFields


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
    return GenerateRequest(
        request_id=request_id,
        kind="chat",
        messages=[m.to_template_dict() for m in req.messages],
        sampling=_sampling(req, req.effective_max_tokens()),
    )


def completion_request(req: CompletionRequest, request_id: str) -> GenerateRequest:
    return GenerateRequest(
        request_id=request_id,
        kind="completion",
        prompt=req.prompt,  # type: ignore[arg-type]  # validated to one prompt
        sampling=_sampling(req, req.max_tokens),
    )
