"""POST /v1/openai/images/generations.

    read_json → parse (ImageGenerationRequest: prompt, n 1-4, response_format, ...)
    → size syntax ('WxH'; the model's bounds are checked by its replica, which knows them)
    → resolve the model (the default image model when `model` is absent)
    → one handle call: ImageRequest in, ImageResult or ErrorInfo out
    → base64 and the OpenAI ImagesResponse
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import ImageRequest, ImageResult
from ingress.catalog import CatalogEntry
from ingress.errors import OpenAIError
from ingress.wire.images import ImageData, ImageGenerationRequest, ImagesResponse, parse_size

if TYPE_CHECKING:
    from ingress.app import OpenAIService


async def images_endpoint(service: "OpenAIService", request: Request) -> Response:
    # ingress.app imports this module to build its routes; its helpers are imported
    # here, at call time, to keep that one-way at import.
    from ingress.app import engine_request_id, parse, read_json

    req = parse(ImageGenerationRequest, await read_json(request, service.config.max_body_bytes))
    if req.response_format == "url":
        raise OpenAIError("response_format 'url' is not supported: images are returned "
                          "inline. Use 'b64_json' (the default).", 400,
                          param="response_format", code="unsupported_value")
    if req.stream:
        raise OpenAIError("Streaming image generation is not supported; omit 'stream'.",
                          400, param="stream", code="unsupported_value")
    size = parse_size(req.size)
    if size is None:
        raise OpenAIError(f"size must be 'WIDTHxHEIGHT' in pixels, e.g. '1024x1024', "
                          f"not {req.size!r}.", 400, param="size", code="invalid_value")
    entry = await _image_model(service, req.model)
    output_format = req.output_format or "png"
    call = ImageRequest(
        request_id=engine_request_id(request), prompt=req.prompt, n=req.n or 1,
        width=size[0], height=size[1], seed=req.seed,
        num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
        output_format=output_format, output_compression=req.output_compression,
    )
    result = await service.call_model(request, entry, "generate", call)
    # Base64 and JSON of several megabytes (n 1024x1024 PNGs) take milliseconds that
    # other requests on this ingress should not wait for.
    body = await asyncio.to_thread(_response_body, result, req.prompt)
    return Response(body, media_type="application/json")


def _response_body(result: ImageResult, prompt: str) -> str:
    data = [ImageData(b64_json=base64.b64encode(image).decode("ascii"), revised_prompt=prompt)
            for image in result.images]
    return ImagesResponse(data=data, output_format=result.output_format,
                          size=f"{result.width}x{result.height}").model_dump_json()


async def _image_model(service: "OpenAIService", model: str | None) -> CatalogEntry:
    """The named model, or the default image model: among image models, the one marked
    default, else the only one."""
    if model:
        return await service.resolve(model, "image")
    entry = _default_image_entry(service)
    if entry is None:  # maybe deployed since the last refresh
        await service.catalog.refresh_if_stale(service.config.catalog_miss_refresh_s)
        entry = _default_image_entry(service)
    if entry is None:
        names = sorted({e.card.model for e in service.catalog.entries()
                        if "image" in e.card.tasks})
        if names:
            raise OpenAIError(f"Several image models are served ({', '.join(names)}) and "
                              "none is the default; name one in 'model'.", 400,
                              param="model", code="model_required")
        raise OpenAIError("No image model is deployed. Add one to serve_config.yaml "
                          "(README: 'Images').", 404, param="model",
                          code="model_not_found")
    # Through resolve, so a failed or stopped application answers as for a named one.
    return await service.resolve(f"deploy_id:{entry.deploy_id}", "image")


def _default_image_entry(service: "OpenAIService") -> CatalogEntry | None:
    images = [e for e in service.catalog.entries() if "image" in e.card.tasks]
    marked = {e.card.model for e in images if e.card.default}
    names = marked or {e.card.model for e in images}
    if len(names) != 1:
        return None
    # The catalog's own pick among that model's versions (default, else the highest).
    return service.catalog.default_for(names.pop())
