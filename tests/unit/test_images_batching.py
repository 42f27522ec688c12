"""Image batching and size rules: pure logic, with a recording stand-in for the
pipeline call (the pipeline itself is exercised in tests/e2e/test_images.py)."""

import asyncio

import pytest

from deployments.images.batching import BatchKey, ImageBatcher
from deployments.images.config import SizeLimits

KEY = BatchKey(256, 256, 4, 0.0)
OTHER = BatchKey(512, 256, 4, 0.0)


def test_size_rules_name_the_limit():
    limits = SizeLimits(min_side=64, max_side=1024, multiple_of=16)
    assert limits.problem(256, 512) is None
    assert "multiple of 16" in limits.problem(250, 256)
    assert "1024" in limits.problem(2048, 256)
    assert "minimum of 64" in limits.problem(256, 32)
    with pytest.raises(ValueError):
        SizeLimits(min_side=512, max_side=256)


def test_concurrent_compatible_requests_share_a_call_and_keep_order():
    calls = []

    async def run_batch(key, prompts, seeds):
        calls.append((key, list(prompts)))
        await asyncio.sleep(0.01)
        return [f"img:{p}:{s}" for p, s in zip(prompts, seeds)]

    async def main():
        batcher = ImageBatcher(run_batch, max_batch_images=8, wait_s=0.05)
        results = await asyncio.gather(
            batcher.submit(KEY, ["a", "b"], [1, 2]),
            batcher.submit(KEY, ["c"], [3]),
            batcher.submit(OTHER, ["d"], [4]),
        )
        return batcher, results

    batcher, results = asyncio.run(main())
    assert results[0][0] == ["img:a:1", "img:b:2"] and results[1][0] == ["img:c:3"]
    assert results[2][0] == ["img:d:4"]
    # Same settings ran together; other settings ran in a call of their own.
    assert any(key == KEY and sorted(p) == ["a", "b", "c"] for key, p in calls)
    assert any(key == OTHER and p == ["d"] for key, p in calls)
    assert max(batcher.recent_batch_sizes) == 3


def test_a_failed_call_fails_its_requests_and_the_batcher_goes_on():
    async def run_batch(key, prompts, seeds):
        if "boom" in prompts:
            raise RuntimeError("pipeline failed")
        return list(prompts)

    async def main():
        batcher = ImageBatcher(run_batch, max_batch_images=8, wait_s=0.0)
        with pytest.raises(RuntimeError):
            await batcher.submit(KEY, ["boom"], [1])
        return await batcher.submit(KEY, ["fine"], [2])

    images, size = asyncio.run(main())
    assert images == ["fine"] and size == 1
