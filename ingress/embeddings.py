"""POST /v1/openai/embeddings.

parse (wire syntax: input shape, count, empties → 400)  →  resolve (task "embeddings")
→  admit (the model's concurrency limit)  →  EmbedRequest over the cached handle
→  EmbeddingResult (float32 bytes) or ErrorInfo
→  the OpenAI body, vectors as float lists or base64 as the client asked.

The encoding is done here, not in the replica: it is wire format (the openai SDK
asks for base64 by default and decodes it itself), and the replica's float32 bytes
are already the base64 payload, so the replica stays format-agnostic and the handle
carries a quarter of the bytes a float list would.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import EmbeddingResult, EmbedRequest
from ingress.metrics import StreamRecorder
from ingress.wire.embeddings import EmbeddingRequest, embedding_response

if TYPE_CHECKING:
    from ingress.app import OpenAIService

# Responses with more vectors than this are built in a worker thread.
_INLINE_VECTORS = 64


async def embeddings_endpoint(service: OpenAIService, request: Request) -> Response:
    """Handles one embeddings call (errors leave as OpenAIError, see ingress/app.py).

    Args:
        service: the ingress's service (config, catalog, handles).
        request: the HTTP request.

    Returns:
        The CreateEmbeddingResponse as JSON.

    Raises:
        OpenAIError: for a bad body, an unknown or wrong-task model, or an error
            the model deployment reported.
    """
    # ingress.app imports this module while it loads, so its helpers are imported
    # at call time (a module-level import would be circular).
    from ingress.app import engine_request_id, parse, read_json

    req = parse(EmbeddingRequest, await read_json(request, service.config.max_body_bytes))
    entry = await service.resolve(req.model, "embeddings")
    call = EmbedRequest(
        request_id=engine_request_id(request),
        inputs=req.inputs(),
        dimensions=req.dimensions,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
    )
    recorder = StreamRecorder(service.metrics, entry.card.model, entry.deploy_id,
                              "embeddings")
    result = await service.call_model(request, entry, "embed", call)
    recorder.finish(result.prompt_tokens, 0)
    if len(result.vectors) > _INLINE_VECTORS:
        # 2048 float vectors are ~15 MB of JSON and ~0.2 s to build: off the event
        # loop, so other requests on this ingress keep moving meanwhile.
        body = await asyncio.to_thread(_body, req, result)
    else:
        body = _body(req, result)
    return Response(body, media_type="application/json")


def _body(req: EmbeddingRequest, result: EmbeddingResult) -> str:
    return embedding_response(req.model, result.vectors, result.prompt_tokens,
                              req.encoding_format).model_dump_json()
