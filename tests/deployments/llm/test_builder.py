"""The LLM builder validates first, then binds LLMServer (Application inspected, not run)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve import Application

from deployments.contract import MODEL_CARD_KEY
from deployments.llm.builder import build_app, build_app_with_engine
from deployments.llm.server import LLMServer
from tests.fakes import FakeEngine

ARGS = {
    "model": "org/llm",
    "model_source": "/tmp",
    "engine": {"engine_kwargs": {"max_model_len": 512}},
}


def test_build_app_binds_the_llm_server():
    app = build_app(ARGS)
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.func_or_class is LLMServer and deployment.name == "LLM:org-llm-1"
    assert deployment.max_ongoing_requests == 256 and deployment.init_kwargs == {}
    assert deployment.user_config[MODEL_CARD_KEY]["max_model_len"] == 512


def test_build_app_passes_the_engine_class():
    app = build_app_with_engine(ARGS, engine_cls=FakeEngine)
    assert app._bound_deployment.init_kwargs == {"engine_cls": FakeEngine}


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "org/llm"},  # no model_source
        {**ARGS, "engine": {"engine_kwarg": {}}},  # a typo
        {**ARGS, "tasks": []},
        {**ARGS, "version": "a:b"},
    ],
)
def test_invalid_args_fail_before_binding(bad):
    with pytest.raises(ValidationError):
        build_app(bad)
