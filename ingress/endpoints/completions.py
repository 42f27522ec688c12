"""POST /v1/openai/completions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import GenerationResult
from ingress import bounds, convert
from ingress.endpoints import Api
from ingress.endpoints.generate import check_caps, generate, usage
from ingress.forward import RequestContext
from ingress.http import engine_request_id, parse, read_json
from ingress.wire.completions import Completion, CompletionChoice, CompletionRequest


async def completions(api: Api, request: Request, ctx: RequestContext) -> Response:
    data = await read_json(request, api.config.max_body_bytes)
    return await completions_from_json(api, ctx, data, engine_request_id(request))


async def completions_from_json(
    api: Api, ctx: RequestContext, data: dict[str, Any], request_id: str
) -> Response:
    """The endpoint after the HTTP body: also what a batch line runs (ingress/batches/)."""
    req = parse(CompletionRequest, data)
    check_caps(api.config, req)
    await bounds.check_completion(api.config.bounds, req, api.config.max_tokens_cap)
    entry = await api.forwarder.resolve(ctx, req.model)
    gen = convert.completion_request(req, request_id)
    return await generate(api, ctx, entry, gen, req, req.model, "completion", completion)


def completion(response_id: str, model: str, result: GenerationResult) -> Completion:
    """The whole (non-streamed) completions answer."""
    return Completion(
        id=response_id,
        model=model,
        usage=usage(result),
        choices=[
            CompletionChoice(
                index=c.index,
                text=c.text,
                finish_reason=c.finish_reason,
                logprobs=convert.completion_logprobs(c.logprobs),
            )
            for c in result.choices
        ],
    )
