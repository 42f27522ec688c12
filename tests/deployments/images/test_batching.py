"""Image batching and size rules: pure logic, with a recording stand-in for the
pipeline call (the pipeline itself is exercised in tests/e2e/test_images.py)."""

import asyncio

import pytest

from deployments.images.batching import BatchKey, ImageBatcher
from deployments.images.config import SizeLimits
from tests.waits import until

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
        return [f"img:{p}:{s}" for p, s in zip(prompts, seeds, strict=True)]

    async def main():
        batcher = ImageBatcher(run_batch, max_batch_images=8, wait_s=0.05)
        results = await asyncio.gather(
            batcher.submit(KEY, ["a", "b"], [1, 2]),
            batcher.submit(KEY, ["c"], [3]),
            batcher.submit(OTHER, ["d"], [4]),
        )
        return batcher, results

    batcher, results = asyncio.run(main())
    assert results == [["img:a:1", "img:b:2"], ["img:c:3"], ["img:d:4"]]
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

    assert asyncio.run(main()) == ["fine"]


def test_one_bad_request_fails_alone_and_its_batch_mates_get_their_images():
    calls = []

    async def run_batch(key, prompts, seeds):
        calls.append(list(prompts))
        await asyncio.sleep(0)
        if any("boom" in p for p in prompts):
            raise RuntimeError("pipeline failed")
        return [f"img:{p}" for p in prompts]

    async def main():
        batcher = ImageBatcher(run_batch, max_batch_images=8, wait_s=0.05)
        return batcher, await asyncio.gather(
            batcher.submit(KEY, ["a", "b"], [1, 2]),
            batcher.submit(KEY, ["boom"], [3]),
            batcher.submit(KEY, ["c"], [4]),
            return_exceptions=True,
        )

    batcher, (first, bad, last) = asyncio.run(main())
    assert first == ["img:a", "img:b"] and last == ["img:c"]
    assert isinstance(bad, RuntimeError)
    # The shared call, then each request alone.
    assert calls == [["a", "b", "boom", "c"], ["a", "b"], ["boom"], ["c"]]
    assert dict(batcher.batch_size_counts) == {4: 1, 2: 1, 1: 2}


def test_a_request_whose_client_left_is_not_run_again():
    calls = []

    async def main():
        release = asyncio.Event()

        async def run_batch(key, prompts, seeds):
            calls.append(list(prompts))
            if len(calls) == 1:
                await release.wait()
                raise RuntimeError("shared call failed")
            return list(prompts)

        batcher = ImageBatcher(run_batch, max_batch_images=8, wait_s=0.05)
        kept = asyncio.ensure_future(batcher.submit(KEY, ["kept"], [1]))
        gone = asyncio.ensure_future(batcher.submit(KEY, ["gone"], [2]))
        await until(lambda: calls, "the shared call to start")
        gone.cancel()
        release.set()
        return await kept

    assert asyncio.run(main()) == ["kept"]
    assert calls == [["kept", "gone"], ["kept"]]
