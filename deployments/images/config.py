"""Typed arguments of an image application: what one entry of serve_config.yaml says.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy` with a
message naming the field, before any replica starts. The per-model rules a request is
checked against (size bounds, step limit, defaults) live here too, as pure methods the
replica calls before a request joins a batch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.app_config import EngineConfigBase, ModelAppConfig
from deployments.contract import ErrorInfo, ImageRequest, ModelCard


class SizeLimits(BaseModel):
    """Sizes the model accepts. diffusers silently rounds a size that is not a multiple
    of the latent grid (16 for FLUX), so we refuse it instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_side: int = Field(default=64, ge=16, description="Smallest width or height.")
    max_side: int = Field(default=1024, ge=16, description="Largest width or height.")
    multiple_of: int = Field(
        default=16,
        ge=1,
        description="Width and height must be multiples of this "
        "(FLUX: 16 = VAE scale factor 8 x 2x2 latent packing).",
    )

    @model_validator(mode="after")
    def _check(self) -> SizeLimits:
        if self.min_side > self.max_side:
            raise ValueError("size.min_side must not exceed size.max_side")
        return self

    def problem(self, width: int, height: int) -> str | None:
        """Why `width` x `height` is refused, or None if it is served."""
        for side, value in (("width", width), ("height", height)):
            if value % self.multiple_of:
                return (
                    f"size: {side} {value} is not a multiple of {self.multiple_of}; "
                    f"use e.g. {value - value % self.multiple_of or self.multiple_of}."
                )
            if value > self.max_side:
                return (
                    f"size: {side} {value} is above this model's limit of "
                    f"{self.max_side}; use at most {self.max_side}x{self.max_side}."
                )
            if value < self.min_side:
                return f"size: {side} {value} is below this model's minimum of {self.min_side}."
        return None


class GenerationDefaults(BaseModel):
    """Per-model defaults for the documented extras, and their limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_inference_steps: int = Field(
        default=4,
        ge=1,
        description="Denoising steps when the request names none "
        "(FLUX.1-schnell is distilled for 4).",
    )
    max_inference_steps: int = Field(
        default=50, ge=1, description="Most steps a request may ask for."
    )
    guidance_scale: float = Field(
        default=0.0,
        ge=0,
        description="Guidance when the request names none "
        "(schnell has no guidance embedding: it ignores the value).",
    )

    @model_validator(mode="after")
    def _check(self) -> GenerationDefaults:
        if self.num_inference_steps > self.max_inference_steps:
            raise ValueError("defaults.num_inference_steps exceeds max_inference_steps")
        return self


class BatchingConfig(BaseModel):
    """Dynamic batching: concurrent requests that share size, steps and guidance run
    as one pipeline call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_images: int = Field(
        default=8,
        ge=1,
        description="Most images in one pipeline call. A request is "
        "never split; one with more images than this runs alone.",
    )
    batch_wait_timeout_s: float = Field(
        default=0.05,
        ge=0,
        description="Longest wait for compatible requests to join "
        "a batch. A batch waits only while fewer images are queued than the previous "
        "batch carried, so a lone client never waits; requests that arrive while a "
        "batch runs queue for the next one anyway.",
    )


class ImageEngineConfig(EngineConfigBase):
    """How the diffusers pipeline is loaded and called."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto': CUDA when the replica has a GPU, else CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="'auto': bfloat16 on CUDA, float32 on CPU."
    )
    call_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for every pipeline call (e.g. "
        "max_sequence_length: 256 for FLUX.1-schnell). Checked against the pipeline's "
        "call signature when the replica starts.",
    )


class ImageAppConfig(ModelAppConfig):
    """One image model version served as its own Serve application."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: SizeLimits = Field(default_factory=SizeLimits)
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    engine: ImageEngineConfig = Field(
        default_factory=ImageEngineConfig, description="The diffusers pipeline."
    )

    def card(self) -> ModelCard:
        return ModelCard(**self.card_fields(), tasks=("image",))

    def check(self, request: ImageRequest) -> ErrorInfo | None:
        """The model's rules for one request; None when it may be served."""
        problem = self.size.problem(request.width, request.height)
        if problem:
            return ErrorInfo(problem, param="size", code="invalid_size")
        steps = request.num_inference_steps
        if steps is not None and steps > self.defaults.max_inference_steps:
            return ErrorInfo(
                f"num_inference_steps must be at most "
                f"{self.defaults.max_inference_steps} for this model.",
                param="num_inference_steps",
                code="invalid_value",
            )
        return None
