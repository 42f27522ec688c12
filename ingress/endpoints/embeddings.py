"""POST /v1/openai/embeddings.

The encoding (float list or base64) is done here, not in the replica: it is wire
format (the openai SDK asks for base64 by default and decodes it itself), and the
replica's float32 bytes are already the base64 payload, so the replica stays
format-agnostic and the handle carries a quarter of the bytes a float list would.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import EmbeddingResult, EmbedRequest
from ingress.endpoints import Api
from ingress.forward import RequestContext, to_thread_if
from ingress.http import engine_request_id, parse, read_json
from ingress.wire.embeddings import EmbeddingRequest, embedding_response

# Responses with more vectors than this are built in a worker thread (2048 float
# vectors are ~15 MB of JSON and ~0.2 s to build).
_INLINE_VECTORS = 64


async def embeddings(api: Api, request: Request, ctx: RequestContext) -> Response:
    data = await read_json(request, api.config.max_body_bytes)
    return await embeddings_from_json(api, ctx, data, engine_request_id(request))


async def embeddings_from_json(
    api: Api, ctx: RequestContext, data: dict[str, Any], request_id: str
) -> Response:
    """The endpoint after the HTTP body: also what a batch line runs (ingress/batches/)."""
    req = parse(EmbeddingRequest, data)
    entry = await api.forwarder.resolve(ctx, req.model)
    call = EmbedRequest(
        request_id=request_id,
        inputs=req.inputs(),
        dimensions=req.dimensions,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
    )
    result: EmbeddingResult = await api.forwarder.call(ctx, entry, "embed", call)

    def body() -> str:
        return embedding_response(
            req.model, result.vectors, result.prompt_tokens, req.encoding_format
        ).model_dump_json()

    return Response(
        await to_thread_if(len(result.vectors) > _INLINE_VECTORS, body),
        media_type="application/json",
    )
