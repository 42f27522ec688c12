"""The image model deployment: one diffusers pipeline per replica.

It speaks only the neutral contract (deployments/contract.py): ImageRequest in,
ImageResult or ErrorInfo out. Requests are checked against the model's rules before
they queue, then batched with compatible ones (deployments/images/batching.py); the
pipeline and the encoders run off the event loop (deployments/images/engine.py), so
the replica keeps answering health checks and queueing while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from deployments.contract import ErrorInfo, ImageRequest, ImageResult
from deployments.images.batching import BatchKey, ImageBatcher
from deployments.images.config import ImageAppConfig
from deployments.images.engine import DiffusersEngine, PipelineBatch
from deployments.models.sources import resolve_model_source

logger = logging.getLogger("ray.serve")

_SEED_SPACE = 2**63  # torch seeds are 64-bit; staying below 2**63 keeps them positive


class ImageServer:
    """Serve deployment class; the builder wraps it with serve.deployment."""

    async def __init__(self, config: dict[str, Any], *,
                       engine_cls: type = DiffusersEngine) -> None:
        self._config = ImageAppConfig.model_validate(config)
        # Building the fixture or checking a big directory touches the disk; keep the
        # replica's loop free meanwhile.
        model_path = await asyncio.to_thread(resolve_model_source,
                                             self._config.model_source)
        self._engine = engine_cls(self._config.engine, str(model_path))
        await asyncio.wait_for(self._engine.start(), self._config.engine.start_timeout_s)
        batching = self._config.batching
        self._batcher = ImageBatcher(self._run_batch, batching.max_batch_images,
                                     batching.batch_wait_timeout_s,
                                     on_batch=_batch_size_metric())
        logger.info("serving images from %s as %s (owned_by: %s)", model_path,
                    self._config.model, self._config.owned_by)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve hands us the model card we published; the ingress reads it from the
        controller, so there is nothing to apply here."""

    async def check_health(self) -> None:
        await self._engine.check_health()
        self._batcher.check_health()

    def stats(self) -> dict[str, Any]:
        """Batching counts, for tests and benchmarks: how many images each pipeline
        call carried (recent ones in order, and all of them by size)."""
        return {"recent_batch_sizes": list(self._batcher.recent_batch_sizes),
                "batch_size_counts": dict(self._batcher.batch_size_counts),
                "queued_images": self._batcher.queued_images()}

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()

    async def generate(self, request: ImageRequest) -> ImageResult | ErrorInfo:
        """Makes `request.n` images; see contract.ImageDeployment."""
        error = self._config.check(request)
        if error is not None:
            return error
        defaults = self._config.defaults
        key = BatchKey(
            width=request.width, height=request.height,
            num_inference_steps=request.num_inference_steps or defaults.num_inference_steps,
            guidance_scale=(defaults.guidance_scale if request.guidance_scale is None
                            else request.guidance_scale),
        )
        base = request.seed if request.seed is not None else random.randrange(_SEED_SPACE)
        seeds = [(base + i) % _SEED_SPACE for i in range(request.n)]
        try:
            images, batch_size = await self._batcher.submit(key, [request.prompt] * request.n,
                                                            seeds)
            encoded = await self._engine.encode(images, request.output_format,
                                                request.output_compression)
        except Exception:
            # Inputs were checked above, so what fails here is ours: log it, and tell
            # the client no internals.
            logger.exception("image request %s failed", request.request_id)
            return ErrorInfo(f"Internal server error (request {request.request_id})",
                             status=500, type="server_error")
        return ImageResult(images=encoded, output_format=request.output_format,
                           width=request.width, height=request.height, seeds=seeds,
                           batch_size=batch_size)

    async def _run_batch(self, key: BatchKey, prompts: list[str],
                         seeds: list[int]) -> list[Any]:
        return await self._engine.run(PipelineBatch(
            prompts=prompts, seeds=seeds, width=key.width, height=key.height,
            num_inference_steps=key.num_inference_steps, guidance_scale=key.guidance_scale,
        ))


def _batch_size_metric() -> Any:
    """A Serve metric (exported with Ray's, e.g. to Prometheus) of images per call."""
    from ray.serve import metrics

    histogram = metrics.Histogram(
        "image_batch_size", description="Images per diffusers pipeline call.",
        boundaries=[1, 2, 4, 8, 16, 32],
    )
    return histogram.observe
