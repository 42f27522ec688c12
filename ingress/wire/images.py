"""Image generation: CreateImageRequest and ImagesResponse."""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator

from ingress.wire.common import MAX_INT32, WireModel, _created

MAX_IMAGES = 4  # per request; more would hold a batch (and the replica) for long
DEFAULT_SIZE = "1024x1024"
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


class ImageGenerationRequest(WireModel):
    prompt: str = Field(min_length=1)
    model: str | None = Field(
        default=None, description="None: the default image model (see docs/api.md 'Images')."
    )
    n: int | None = Field(default=1, ge=1, le=MAX_IMAGES)
    # Accepted for compatibility with OpenAI clients; a diffusion pipeline has no
    # equivalent, so they change nothing.
    quality: str | None = None
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="Only b64_json is served; 'url' is refused (400)."
    )
    output_format: Literal["png", "jpeg", "webp"] | None = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    stream: bool | None = None
    size: str | None = Field(default=DEFAULT_SIZE, description="'WIDTHxHEIGHT'.")
    style: str | None = None  # accepted for compatibility, ignored (as quality)
    user: str | None = None

    # --- Extensions (not in the OpenAI spec) -------------------------------------------
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Same seed, prompt and settings give the same image; image i of a "
        "request uses seed + i.",
    )
    num_inference_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT32,
        description="Denoising steps; None: the model's default.",
    )
    guidance_scale: float | None = Field(
        default=None, ge=0, description="Guidance; None: the model's default."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt must contain text")
        return value


def parse_size(size: str | None) -> tuple[int, int] | None:
    """'WIDTHxHEIGHT' → (width, height); None for anything else. A missing size (or
    'auto') is the default size."""
    if size is None or size == "auto":
        size = DEFAULT_SIZE
    match = _SIZE.fullmatch(size)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class ImageData(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


# The only sizes OpenAI's ImagesResponse.size admits (openapi.yaml); other sizes are
# served, but not echoed, so the response stays valid against the schema.
SchemaSize = Literal["1024x1024", "1024x1536", "1536x1024"]
SCHEMA_SIZES: dict[str, SchemaSize] = {s: s for s in get_args(SchemaSize)}


class ImagesResponse(BaseModel):
    created: int = Field(default_factory=_created)
    data: list[ImageData]
    output_format: Literal["png", "jpeg", "webp"]
    size: SchemaSize | None = None
