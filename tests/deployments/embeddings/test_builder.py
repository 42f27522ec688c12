"""The embeddings builder validates first, then binds EmbeddingServer (inspected, not run)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve import Application

from deployments.contract import MODEL_CARD_KEY
from deployments.embeddings.builder import build_app, build_app_with_engine
from deployments.embeddings.server import EmbeddingServer
from tests.fakes import FakeEmbeddingEngine

ARGS = {"model": "org/embed", "model_source": "/tmp"}


def test_build_app_binds_the_embedding_server():
    app = build_app(ARGS)
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.func_or_class is EmbeddingServer
    assert deployment.name == "Embeddings:org-embed-1"
    assert deployment.max_ongoing_requests == 128 and deployment.init_kwargs == {}
    assert deployment.user_config[MODEL_CARD_KEY]["tasks"] == ["embeddings"]


def test_build_app_passes_the_engine_class():
    app = build_app_with_engine(ARGS, engine_cls=FakeEmbeddingEngine)
    assert app._bound_deployment.init_kwargs == {"engine_cls": FakeEmbeddingEngine}


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "org/embed"},
        {**ARGS, "engine": {"pooling": "max"}},
        {**ARGS, "engine": {"engine_kwargs": {"runner": "generate"}}},  # reserved
    ],
)
def test_invalid_args_fail_before_binding(bad):
    with pytest.raises(ValidationError):
        build_app(bad)
