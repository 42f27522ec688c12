"""Dynamic batching of image requests that can share one pipeline call.

Serve's `@serve.batch` batches every call to a method together, but a diffusers call
takes one height, width, step count and guidance for the whole batch, so only requests
that agree on those can share it. This batcher keeps one queue, and each batch takes
the oldest waiting request plus every later one with the same key, up to a number of
images. The oldest request always goes next, so a rare size is never starved by a
popular one. Batches run one at a time: the pipeline holds the whole device anyway,
and requests that arrive during a batch wait for the next, where they can share.

One bad request must not fail its batch mates: when a shared call raises, each of
its requests runs again alone, so only the one that fails by itself gets the error.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What must be equal for requests to share a pipeline call."""

    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


@dataclass(slots=True)
class _Pending:
    key: BatchKey
    prompts: list[str]
    seeds: list[int]
    future: asyncio.Future[list[Any]]


# (key, one prompt per image, one seed per image) -> one image per prompt, in order.
RunBatch = Callable[[BatchKey, list[str], list[int]], Awaitable[list[Any]]]


class ImageBatcher:
    """Queues requests and runs compatible ones together through `run_batch`."""

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_images: int,
        wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max = max_batch_images
        self._wait_s = wait_s
        self._on_batch = on_batch
        self._pending: list[_Pending] = []
        # Made on first use: they belong to the loop that serves requests, which in a
        # Serve replica need not be the one current when the server is constructed.
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        # Requests submitted and not yet answered, by key; at each batch start, how
        # many of them shared its key: the crowd that the next batch waits for.
        self._in_flight: collections.Counter[BatchKey] = collections.Counter()
        self._expected: tuple[BatchKey | None, int] = (None, 1)
        self.recent_batch_sizes: collections.deque[int] = collections.deque(maxlen=256)
        self.batch_size_counts: collections.Counter[int] = collections.Counter()

    async def submit(self, key: BatchKey, prompts: list[str], seeds: list[int]) -> list[Any]:
        """Queues one request's images and waits for them.

        Args:
            key: The pipeline settings the images need.
            prompts: One prompt per image.
            seeds: One seed per image.

        Returns:
            The request's images, in order. The sizes of the batches are counted in
            `recent_batch_sizes`, `batch_size_counts` and the `on_batch` callback.

        Raises:
            Exception: whatever the pipeline call raised for this request's images
                (run alone, after a shared call failed).
        """
        if self._worker is None or self._worker.done():
            self._check_worker()
            self._wakeup = asyncio.Event()
            self._worker = asyncio.create_task(self._loop(), name="image-batcher")
        assert self._wakeup is not None
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(key, prompts, seeds, future))
        self._in_flight[key] += 1
        self._wakeup.set()
        try:
            # A cancelled caller (client gone) cancels `future`: a queued request is
            # then skipped; a running one finishes and its images are dropped, since a
            # diffusers call cannot give back part of its batch.
            return await future
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    def queued_images(self) -> int:
        return sum(len(p.prompts) for p in self._pending if not p.future.done())

    def check_health(self) -> None:
        """Raises if the batching loop died (it should never stop on its own)."""
        self._check_worker()

    def _check_worker(self) -> None:
        if self._worker is not None and self._worker.done() and not self._worker.cancelled():
            exc = self._worker.exception()
            raise RuntimeError(f"the image batching loop stopped: {exc!r}") from exc

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._drop_done():
                await self._gather()
                batch = self._take()
                if batch:
                    await self._run(batch)

    async def _gather(self) -> None:
        """Waits, at most `wait_s`, until as many compatible requests are queued as were
        in the replica when the previous batch of this key started (or it is full).

        Clients that send their next request as soon as an answer arrives come back
        over tens of milliseconds, not all at once. Without this wait the first of
        them runs alone, and then the crowd settles into halves that take turns (each
        half is ready whenever the other finishes) instead of sharing one call. A lone
        client (one request in flight) never waits.
        """
        assert self._wakeup is not None
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while self._drop_done():
            requests, images = self._ready()
            key, expected = self._expected
            if key != self._pending[0].key or requests >= expected or images >= self._max:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _drop_done(self) -> bool:
        self._pending = [p for p in self._pending if not p.future.done()]
        return bool(self._pending)

    def _ready(self) -> tuple[int, int]:
        """(requests, images) queued with the oldest request's key."""
        same = [p for p in self._pending if p.key == self._pending[0].key]
        return len(same), sum(len(p.prompts) for p in same)

    def _take(self) -> list[_Pending]:
        """The oldest live request and the later ones with its key that still fit."""
        taken: list[_Pending] = []
        images = 0
        key: BatchKey | None = None
        for p in self._pending:
            if p.future.done():
                continue
            if key is None:
                key = p.key
            if p.key != key or (taken and images + len(p.prompts) > self._max):
                continue
            taken.append(p)
            images += len(p.prompts)
        chosen = {id(p) for p in taken}
        self._pending = [p for p in self._pending if id(p) not in chosen]
        return taken

    async def _run(self, batch: list[_Pending]) -> None:
        self._expected = (batch[0].key, self._in_flight[batch[0].key])
        try:
            images = await self._call(batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # One request (a prompt the pipeline chokes on, say) or the batch's size
            # may be at fault: each request alone finds out which, at the cost of one
            # call per request, only on this rare path.
            logger.warning(
                "image batch of %d requests failed (%r); running each alone", len(batch), exc
            )
            for p in batch:
                if p.future.done():  # its client left meanwhile
                    continue
                try:
                    alone = await self._call([p])
                except Exception as own:
                    _fail(p, own)
                else:
                    _answer(p, alone)
            return
        start = 0
        for p in batch:
            end = start + len(p.prompts)
            _answer(p, images[start:end])
            start = end

    async def _call(self, batch: list[_Pending]) -> list[Any]:
        """One pipeline call for `batch` (requests with one key), counted and logged."""
        prompts = [text for p in batch for text in p.prompts]
        seeds = [seed for p in batch for seed in p.seeds]
        size = len(prompts)
        self.recent_batch_sizes.append(size)
        self.batch_size_counts[size] += 1
        if self._on_batch is not None:
            self._on_batch(size)
        logger.info(
            "image batch: %d image(s) from %d request(s), %dx%d, %d steps",
            size,
            len(batch),
            batch[0].key.width,
            batch[0].key.height,
            batch[0].key.num_inference_steps,
        )
        return await self._run_batch(batch[0].key, prompts, seeds)


def _answer(p: _Pending, images: list[Any]) -> None:
    if not p.future.done():
        p.future.set_result(images)


def _fail(p: _Pending, exc: Exception) -> None:
    if not p.future.done():
        p.future.set_exception(exc)
