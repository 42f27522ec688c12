"""POST /v1/openai/images/generations.

parse (ImageGenerationRequest: prompt, n 1-4, response_format, ...)
→ size syntax ('WxH'; the model's bounds are checked by its replica, which knows them)
→ resolve the model (the default image model when `model` is absent)
→ one handle call: ImageRequest in, ImageResult or ErrorInfo out
→ base64 and the OpenAI ImagesResponse
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import ImageRequest, ImageResult
from ingress.catalog import Catalog, CatalogEntry
from ingress.endpoints import Api
from ingress.errors import OpenAIError
from ingress.forward import RequestContext, to_thread_if
from ingress.http import engine_request_id, read_request
from ingress.wire.images import (
    SCHEMA_SIZES,
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    parse_size,
)


async def images_generations(api: Api, request: Request, ctx: RequestContext) -> Response:
    req = await read_request(request, ImageGenerationRequest, api.config.max_body_bytes)
    if req.response_format == "url":
        raise OpenAIError(
            "response_format 'url' is not supported: images are returned "
            "inline. Use 'b64_json' (the default).",
            400,
            param="response_format",
            code="unsupported_value",
        )
    if req.stream:
        raise OpenAIError(
            "Streaming image generation is not supported; omit 'stream'.",
            400,
            param="stream",
            code="unsupported_value",
        )
    size = parse_size(req.size)
    if size is None:
        raise OpenAIError(
            f"size must be 'WIDTHxHEIGHT' in pixels, e.g. '1024x1024', not {req.size!r}.",
            400,
            param="size",
            code="invalid_value",
        )
    entry = await _image_model(api, ctx, req.model)
    call = ImageRequest(
        request_id=engine_request_id(request),
        prompt=req.prompt,
        n=req.n or 1,
        width=size[0],
        height=size[1],
        seed=req.seed,
        num_inference_steps=req.num_inference_steps,
        guidance_scale=req.guidance_scale,
        output_format=req.output_format or "png",
        output_compression=req.output_compression,
    )
    result: ImageResult = await api.forwarder.call(ctx, entry, "generate", call)
    # Base64 and JSON of several megabytes always leave the event loop.
    return Response(
        await to_thread_if(True, lambda: _body(result, req.prompt)), media_type="application/json"
    )


def _body(result: ImageResult, prompt: str) -> str:
    data = [
        ImageData(b64_json=base64.b64encode(image).decode("ascii"), revised_prompt=prompt)
        for image in result.images
    ]
    size = f"{result.width}x{result.height}"
    response = ImagesResponse(
        data=data, output_format=result.output_format, size=SCHEMA_SIZES.get(size)
    )
    return response.model_dump_json(exclude={"size"} if response.size is None else None)


async def _image_model(api: Api, ctx: RequestContext, model: str | None) -> CatalogEntry:
    """The named model, or the default image model: among image models, the one marked
    default, else the only one."""
    forwarder = api.forwarder
    if model:
        return await forwarder.resolve(ctx, model)
    catalog = forwarder.catalog
    entry = await catalog.find(lambda: default_image_entry(catalog))
    if entry is not None:
        return forwarder.accept(ctx, entry, entry.card.model)
    names = sorted({e.card.model for e in catalog.entries() if "image" in e.card.tasks})
    if names:
        raise OpenAIError(
            f"Several image models are served ({', '.join(names)}) and "
            "none is the default; name one in 'model'.",
            400,
            param="model",
            code="model_required",
        )
    raise OpenAIError(
        "No image model is deployed. Add one to serve_config.yaml (docs/api.md: 'Images').",
        404,
        param="model",
        code="model_not_found",
    )


def default_image_entry(catalog: Catalog) -> CatalogEntry | None:
    images = [e for e in catalog.entries() if "image" in e.card.tasks]
    marked = {e.card.model for e in images if e.card.default}
    names = marked or {e.card.model for e in images}
    if len(names) != 1:
        return None
    # The catalog's own pick among that model's versions (default, else the highest).
    return catalog.default_for(names.pop())
