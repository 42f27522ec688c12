"""The image model deployment: one diffusers pipeline per replica.

It speaks only the neutral contract (deployments/contract.py): ImageRequest in,
ImageResult or ErrorInfo out. Requests are checked against the model's rules before
they queue, then batched with compatible ones (deployments/images/batching.py); the
pipeline and the encoders run off the event loop (deployments/images/engine.py), so
the replica keeps answering health checks and queueing while it computes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from deployments.contract import ErrorInfo, ImageRequest, ImageResult
from deployments.engines import ImageEngine, ImageEngineClass
from deployments.errors import internal_error
from deployments.images.batching import BatchKey, ImageBatcher
from deployments.images.config import ImageAppConfig
from deployments.images.engine import DiffusersEngine, PipelineBatch
from deployments.server_base import ModelServer

logger = logging.getLogger("ray.serve")

_SEED_SPACE = 2**63  # torch seeds are 64-bit; staying below 2**63 keeps them positive


class ImageServer(ModelServer[ImageAppConfig, ImageEngine]):
    """Serve deployment class; the builder wraps it with serve.deployment."""

    config_cls = ImageAppConfig

    async def __init__(  # type: ignore[misc]  # Serve awaits it (server_base.py)
        self, config: dict[str, Any], *, engine_cls: ImageEngineClass = DiffusersEngine
    ) -> None:
        """Starts the pipeline (see ModelServer), then the batcher in front of it.

        Args:
            config: the application's ImageAppConfig as JSON.
            engine_cls: the engine class; tests pass a typed fake.
        """
        await super().__init__(config, engine_cls=engine_cls)
        batching = self._config.batching
        self._batcher = ImageBatcher(
            self._run_batch,
            batching.max_batch_images,
            batching.batch_wait_timeout_s,
            on_batch=_batch_size_metric(),
        )
        logger.info(
            "serving images from %s as %s (owned_by: %s)",
            self._model_path,
            self._config.model,
            self._config.owned_by,
        )

    async def check_health(self) -> None:
        """Raises when the pipeline is gone or the batcher's worker died."""
        await super().check_health()
        self._batcher.check_health()

    def stats(self) -> dict[str, Any]:
        """Batching counts, for tests and benchmarks: how many images each pipeline
        call carried (recent ones in order, and all of them by size)."""
        return {
            "recent_batch_sizes": list(self._batcher.recent_batch_sizes),
            "batch_size_counts": dict(self._batcher.batch_size_counts),
            "queued_images": self._batcher.queued_images(),
        }

    async def generate(self, request: ImageRequest) -> ImageResult | ErrorInfo:
        """Makes `request.n` images; see contract.ImageDeployment."""
        error = self._config.check(request)
        if error is not None:
            return error
        defaults = self._config.defaults
        key = BatchKey(
            width=request.width,
            height=request.height,
            num_inference_steps=request.num_inference_steps or defaults.num_inference_steps,
            guidance_scale=(
                defaults.guidance_scale
                if request.guidance_scale is None
                else request.guidance_scale
            ),
        )
        base = request.seed if request.seed is not None else random.randrange(_SEED_SPACE)
        seeds = [(base + i) % _SEED_SPACE for i in range(request.n)]
        try:
            images = await self._batcher.submit(key, [request.prompt] * request.n, seeds)
            encoded = await self._engine.encode(
                images, request.output_format, request.output_compression
            )
        except Exception as exc:
            # Inputs were checked above, so what fails here is ours.
            return internal_error(request.request_id, exc)
        return ImageResult(
            images=encoded,
            output_format=request.output_format,
            width=request.width,
            height=request.height,
        )

    async def _run_batch(self, key: BatchKey, prompts: list[str], seeds: list[int]) -> list[Any]:
        return await self._engine.run(
            PipelineBatch(
                prompts=prompts,
                seeds=seeds,
                width=key.width,
                height=key.height,
                num_inference_steps=key.num_inference_steps,
                guidance_scale=key.guidance_scale,
            )
        )


def _batch_size_metric() -> Callable[[float], None]:
    """A Serve metric (exported with Ray's, e.g. to Prometheus) of images per call."""
    from ray.serve import metrics

    histogram = metrics.Histogram(
        "openai_serve_image_batch_size",
        description="Images per diffusers pipeline call.",
        boundaries=[1, 2, 4, 8, 16, 32],
    )
    return histogram.observe
