"""The embeddings replica's model-dependent checks (input length, vocabulary,
dimensions), its builder and the serve_config entries, on a typed fake engine: no
Ray, no vLLM."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deployments.contract import EmbeddingResult, EmbedRequest, ErrorInfo
from deployments.embeddings.builder import build_app
from deployments.embeddings.pooling import PoolingSpec
from deployments.embeddings.server import EmbeddingServer, reduce_dimensions


def test_reduce_dimensions():
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32) / 13
    assert np.allclose(reduce_dimensions(v, 2, True), [[0.6, 0.8]])
    assert np.allclose(reduce_dimensions(v, 2, False), v[:, :2])
    assert reduce_dimensions(v, None, True) is v


class FakeEngine:
    """The engine surface the server uses; vectors are one-hot on the first token."""

    def __init__(self, config, model_path: str, spec: PoolingSpec, *, on_batch=None):
        self.spec = spec
        self.batch_sizes: Counter[int] = Counter()
        self.max_input_tokens, self.vocab_size, self.dimensions = 8, 100, 4

    async def start(self) -> None:
        pass

    async def check_health(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        ids = [[1, *(len(w) for w in t.split()), 2] for t in texts]
        return [i[:max_tokens] for i in ids] if max_tokens else ids

    async def embed(self, token_ids: list[list[int]], request_id: str) -> np.ndarray:
        self.batch_sizes[len(token_ids)] += 1
        out = np.zeros((len(token_ids), 4), dtype=np.float32)
        for row, ids in zip(out, token_ids, strict=True):
            row[ids[1] % 4] = 1.0
        return out


@pytest.fixture
def server(tmp_path: Path) -> EmbeddingServer:
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode": "cls"}')
    config = {"model": "m", "model_source": str(tmp_path), "engine": {"normalize": True}}
    return asyncio.run(_make(config))


async def _make(config: dict) -> EmbeddingServer:
    server = EmbeddingServer.__new__(EmbeddingServer)
    await server.__init__(config, engine_cls=FakeEngine)
    return server


def _embed(server: EmbeddingServer, **fields) -> EmbeddingResult | ErrorInfo:
    return asyncio.run(server.embed(EmbedRequest(request_id="r", **fields)))


def test_server_embeds_in_order_and_counts_tokens(server):
    result = _embed(server, inputs=["a bb", "ccc"])
    assert isinstance(result, EmbeddingResult)
    vectors = [np.frombuffer(v, "<f4").tolist() for v in result.vectors]
    assert vectors == [[0, 1, 0, 0], [0, 0, 0, 1]]
    assert result.prompt_tokens == 4 + 3 and len(result.vectors[0]) == 4 * 4  # float32
    assert server.stats()["pooling"] == "cls" and server.stats()["normalize"] is True


def test_server_model_dependent_limits(server):
    too_long = _embed(server, inputs=["a " * 10])
    assert too_long.param == "input" and too_long.code == "context_length_exceeded"
    assert "maximum input length is 8" in too_long.message
    assert _embed(server, inputs=["a " * 10], truncate_prompt_tokens=-1).prompt_tokens == 8
    assert _embed(server, inputs=[[1] * 20], truncate_prompt_tokens=3).prompt_tokens == 3
    assert _embed(server, inputs=["a"], truncate_prompt_tokens=9).param == (
        "truncate_prompt_tokens"
    )
    assert _embed(server, inputs=[[1, 100]]).message.startswith("The input has token id 100")
    assert _embed(server, inputs=["a"], dimensions=5).param == "dimensions"
    cut = _embed(server, inputs=["a bb"], dimensions=2)
    assert np.frombuffer(cut.vectors[0], "<f4").tolist() == [0, 1]


def test_builder_publishes_an_embeddings_card():
    app = build_app(
        {
            "model": "org/emb",
            "version": "2",
            "model_source": "/m",
            "deployment": {"max_ongoing_requests": 64},
        }
    )
    deployment = app._bound_deployment
    card = deployment._deployment_config.user_config["openai_serve_model_card"]
    assert card["tasks"] == ["embeddings"] and card["version"] == "2"
    assert deployment.name == "Embeddings:org-emb-2"
    assert deployment._deployment_config.max_ongoing_requests == 64


def test_config_refuses_reserved_engine_kwargs():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="runner"):
        build_app(
            {
                "model": "m",
                "model_source": "/m",
                "engine": {"engine_kwargs": {"runner": "generate"}},
            }
        )


@pytest.mark.parametrize(
    "config_file, model",
    [
        ("serve_config.yaml", "sentence-transformers/all-MiniLM-L6-v2"),
        ("serve_config.gpu.yaml", "BAAI/bge-large-en-v1.5"),
    ],
)
def test_serve_config_entries_build(config_file, model):
    import yaml

    config = yaml.safe_load((Path(__file__).parents[3] / config_file).read_text())
    entries = [
        a
        for a in config["applications"]
        if a["import_path"] == "deployments.embeddings.builder:build_app"
    ]
    assert [e["args"]["model"] for e in entries] == [model]
    card = build_app(entries[0]["args"])._bound_deployment._deployment_config.user_config
    assert card["openai_serve_model_card"]["tasks"] == ["embeddings"]
