"""What chat and completions share: the server's caps on the sampling fields, and
the choice between one JSON body and an SSE stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel
from starlette.responses import Response

from deployments.contract import GenerateRequest, GenerationResult
from ingress.catalog import CatalogEntry
from ingress.config import IngressConfig
from ingress.endpoints import Api
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from ingress.streaming import ChunkFramer, SSEResponse, sse_stream
from ingress.wire.common import Usage, new_id
from ingress.wire.sampling import SamplingFields

# Builds the whole (non-streamed) response: (response id, model, result) → wire body.
Shape = Callable[[str, str, GenerationResult], BaseModel]


def check_caps(config: IngressConfig, req: SamplingFields) -> None:
    """The server's bounds on `n` and `max_tokens` (400 naming the field)."""
    if req.n > config.max_n:
        raise OpenAIError(
            f"n must be at most {config.max_n}.", 400, param="n", code="invalid_value"
        )
    cap = config.max_tokens_cap
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, name, None)
        if cap is not None and value is not None and value > cap:
            raise OpenAIError(
                f"{name} must be at most {cap}.", 400, param=name, code="invalid_value"
            )


async def generate(
    api: Api,
    ctx: RequestContext,
    entry: CatalogEntry,
    gen: GenerateRequest,
    req: SamplingFields,
    model: str,
    task: Literal["chat", "completion"],
    shape: Shape,
) -> Response:
    """Forwards a generation: streamed as SSE when the client asked, else whole."""
    gen.adapter = entry.adapter  # a version that is a LoRA adapter runs on its base
    response_id = new_id("chatcmpl" if task == "chat" else "cmpl")
    if req.stream:
        stream = await api.forwarder.open_stream(ctx, entry, "generate", gen)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        framer = ChunkFramer(task, response_id, int(time.time()), model, include_usage)
        return SSEResponse(sse_stream(framer, stream, ctx.request_id), stream)
    result: GenerationResult = await api.forwarder.call(ctx, entry, "complete", gen)
    body = shape(response_id, model, result)
    return Response(body.model_dump_json(), media_type="application/json")


def usage(result: GenerationResult) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )
