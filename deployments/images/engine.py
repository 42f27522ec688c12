"""The diffusers seam: every use of torch and diffusers for images lives here.

One pipeline per replica, loaded with `DiffusionPipeline.from_pretrained(dir)`, so any
diffusers text-to-image pipeline directory works (FLUX first). A pipeline call holds
the CPU or GPU for up to seconds, so it runs on a dedicated one-thread executor:
calls are serialised (a pipeline object is not safe to call from two threads at once)
and the replica's event loop stays free for health checks and for queueing the next
batch. Encoding runs off the loop too, on the default executor, so it overlaps the
next batch's denoising.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from deployments.images.config import ImageEngineConfig

logger = logging.getLogger("ray.serve")

# Pillow's format names; OpenAI's `jpeg` is Pillow's JPEG, and so on.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True, slots=True)
class PipelineBatch:
    """One pipeline call: one prompt and one seed per image, all of one shape."""

    prompts: list[str]
    seeds: list[int]
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


class DiffusersEngine:
    """Holds one diffusers pipeline; the image server's only view of torch."""

    def __init__(self, config: ImageEngineConfig, model_dir: str) -> None:
        self._config = config
        self._model_dir = model_dir
        self._pipe: Any = None
        self._accepted: Any = {}  # the pipeline's call parameters, known once loaded
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusers")

    async def start(self) -> None:
        """Loads the pipeline off the event loop (seconds to minutes for big models).

        Raises:
            ValueError: `call_kwargs` names an argument the pipeline does not take.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        # Progress bars (per call, per loaded component) would flood Serve's log.
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers'
        device = self._config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self._config.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device == "cuda" else "float32"
        # `dtype`, not `torch_dtype`: diffusers 0.42 deprecates the older name.
        pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]  # diffusers'
            self._model_dir, dtype=getattr(torch, dtype_name)
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        accepted = inspect.signature(pipe.__call__).parameters
        unknown = sorted(set(self._config.call_kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"engine.call_kwargs {unknown} are not arguments of "
                f"{type(pipe).__name__}; remove them"
            )
        self._accepted = accepted
        self._pipe = pipe
        logger.info(
            "loaded %s from %s on %s (%s, %d torch threads)",
            type(pipe).__name__,
            self._model_dir,
            device,
            dtype_name,
            torch.get_num_threads(),
        )

    async def check_health(self) -> None:
        """Raises only when the pipeline is gone (it has no background process)."""
        if self._pipe is None:
            raise RuntimeError("the diffusers pipeline is not loaded")

    async def run(self, batch: PipelineBatch) -> list[Any]:
        """Runs one pipeline call off the event loop.

        Returns:
            One PIL image per prompt, in order.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, batch)

    def _run(self, batch: PipelineBatch) -> list[Any]:
        import torch

        # One CPU generator per image: image i's noise depends on its own seed only,
        # whatever else shares the batch, and CPU noise is the same on any device.
        generators = [torch.Generator("cpu").manual_seed(s) for s in batch.seeds]
        kwargs: dict[str, Any] = dict(
            prompt=batch.prompts,
            height=batch.height,
            width=batch.width,
            num_inference_steps=batch.num_inference_steps,
            generator=generators,
            output_type="pil",
            **self._config.call_kwargs,
        )
        if "guidance_scale" in self._accepted:
            kwargs["guidance_scale"] = batch.guidance_scale
        if "num_images_per_prompt" in self._accepted:
            kwargs["num_images_per_prompt"] = 1  # n is expanded into prompts already
        return list(self._pipe(**kwargs).images)

    async def encode(
        self, images: list[Any], output_format: str, quality: int | None
    ) -> list[bytes]:
        """Encodes PIL images off the event loop (PNG of a 1024x1024 image: ~0.1-0.3 s)."""
        return await asyncio.to_thread(_encode_all, images, output_format, quality)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _encode_all(images: list[Any], output_format: str, quality: int | None) -> list[bytes]:
    fmt = _PIL_FORMATS[output_format]
    options: dict[str, Any] = {}
    if fmt != "PNG" and quality is not None:
        options["quality"] = quality
    out = []
    for image in images:
        if fmt == "JPEG" and image.mode != "RGB":
            image = image.convert("RGB")  # JPEG has no alpha
        buf = io.BytesIO()
        image.save(buf, format=fmt, **options)
        out.append(buf.getvalue())
    return out
