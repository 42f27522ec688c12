"""EmbeddingServer returns vectors and the model's limits as errors, on a typed fake engine."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from deployments.contract import EmbeddingResult, EmbedRequest
from deployments.embeddings.server import EmbeddingServer
from tests.fakes import FakeEmbeddingEngine, start_server


def _run(model_dir: Any, body: Any) -> Any:
    async def main() -> Any:
        # The directory has no sentence-transformers files: the config names the pooling.
        config = {
            "model": "e",
            "model_source": str(model_dir),
            "engine": {"pooling": "cls", "normalize": True},
        }
        server = await start_server(EmbeddingServer, config, FakeEmbeddingEngine)
        return await body(server, server._engine)

    return asyncio.run(main())


def _request(**fields: Any) -> EmbedRequest:
    return EmbedRequest(request_id="emb-1", **fields)


def test_vectors_in_input_order_with_their_token_count(tmp_path):
    async def body(server: EmbeddingServer, engine: FakeEmbeddingEngine) -> Any:
        return await server.embed(_request(inputs=["a bb", "ccc"])), server.stats(), engine

    result, stats, engine = _run(tmp_path, body)
    assert isinstance(result, EmbeddingResult) and result.prompt_tokens == 4 + 3
    assert [np.frombuffer(v, "<f4").tolist() for v in result.vectors] == [
        [0, 1, 0, 0],
        [0, 0, 0, 1],
    ]
    assert (stats["pooling"], stats["normalize"]) == ("cls", True)
    assert engine.config.served_model_name == "e" and engine.spec.mode == "cls"


def test_model_limits_are_the_callers_fault(tmp_path):
    async def body(server: EmbeddingServer, engine: FakeEmbeddingEngine) -> Any:
        return (
            await server.embed(_request(inputs=["a " * 10])),
            await server.embed(_request(inputs=["a"], dimensions=5)),
            await server.embed(_request(inputs=[[1, 99]])),
        )

    too_long, too_wide, bad_id = _run(tmp_path, body)
    assert (too_long.kind, too_long.param, too_long.code) == (
        "context_length",
        "input",
        "context_length_exceeded",
    )
    assert (too_wide.kind, too_wide.param) == ("invalid_request", "dimensions")
    assert (bad_id.kind, bad_id.param) == ("invalid_request", "input")


def test_an_engine_failure_is_internal_without_internals(tmp_path):
    async def body(server: EmbeddingServer, engine: FakeEmbeddingEngine) -> Any:
        engine.fail = RuntimeError("engine core died at 0xdead")
        return await server.embed(_request(inputs=["a"]))

    error = _run(tmp_path, body)
    assert error.kind == "internal" and error.message == (
        "Internal server error (request id emb-1)."
    )
