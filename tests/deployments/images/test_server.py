"""ImageServer checks model rules, batches and reports failures, on a typed fake pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

from deployments.contract import ErrorInfo, ImageRequest, ImageResult
from deployments.images.server import ImageServer
from tests.fakes import FakeImageEngine, start_server


def _run(model_dir: Any, body: Any) -> Any:
    async def main() -> Any:
        config = {
            "model": "i",
            "model_source": str(model_dir),
            "batching": {"batch_wait_timeout_s": 0},
        }
        server = await start_server(ImageServer, config, FakeImageEngine)
        return await body(server, server._engine)

    return asyncio.run(main())


def _request(**fields: Any) -> ImageRequest:
    return ImageRequest(
        **{"request_id": "img-1", "prompt": "a cube", "width": 64, "height": 64, **fields}
    )


def test_images_come_back_encoded_in_order_with_consecutive_seeds(tmp_path):
    async def body(server: ImageServer, engine: FakeImageEngine) -> Any:
        return await server.generate(_request(n=2, seed=7, output_format="jpeg")), engine.batches

    result, batches = _run(tmp_path, body)
    assert result == ImageResult([b"jpeg:a cube:7", b"jpeg:a cube:8"], "jpeg", 64, 64)
    [batch] = batches
    assert batch.num_inference_steps == 4 and batch.guidance_scale == 0.0  # the defaults


def test_model_rules_answer_before_the_pipeline_runs(tmp_path):
    async def body(server: ImageServer, engine: FakeImageEngine) -> Any:
        return (
            await server.generate(_request(width=100)),
            await server.generate(_request(num_inference_steps=51)),
            engine.batches,
        )

    size, steps, batches = _run(tmp_path, body)
    assert (size.kind, size.param, size.code) == ("invalid_request", "size", "invalid_size")
    assert steps.param == "num_inference_steps" and batches == []


def test_a_pipeline_failure_is_internal_and_the_server_goes_on(tmp_path):
    async def body(server: ImageServer, engine: FakeImageEngine) -> Any:
        engine.fail = RuntimeError("CUDA error at 0xdead")
        failed = await server.generate(_request())
        engine.fail = None
        await server.check_health()
        return failed, await server.generate(_request(seed=1)), server.stats()

    failed, ok, stats = _run(tmp_path, body)
    assert failed == ErrorInfo("Internal server error (request id img-1).", kind="internal")
    assert ok.images == [b"png:a cube:1"]
    assert stats["batch_size_counts"] == {1: 2}


def test_one_bad_request_in_a_batch_fails_alone(tmp_path):
    async def body(server: ImageServer, engine: FakeImageEngine) -> Any:
        engine.fail_on = "boom"
        results = await asyncio.gather(
            server.generate(_request(request_id="good-1", prompt="a cube", seed=1)),
            server.generate(_request(request_id="bad", prompt="a boom", seed=2)),
            server.generate(_request(request_id="good-2", prompt="a ball", seed=3)),
        )
        return results, server.stats()

    (good, bad, other), stats = _run(tmp_path, body)
    assert good == ImageResult([b"png:a cube:1"], "png", 64, 64)
    assert other == ImageResult([b"png:a ball:3"], "png", 64, 64)
    assert bad == ErrorInfo("Internal server error (request id bad).", kind="internal")
    assert stats["batch_size_counts"] == {3: 1, 1: 3}  # the shared call, then each alone
