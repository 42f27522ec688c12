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


LORA_ENGINE = {"engine_kwargs": {"max_model_len": 512, "enable_lora": True}}


def test_adapters_in_args_are_published_as_live_settings():
    adapters = [{"version": "a", "source": "/a"}, {"version": "b", "source": "/b", "default": True}]
    deployment = build_app({**ARGS, "engine": LORA_ENGINE, "adapters": adapters})._bound_deployment
    published = deployment.user_config["adapters"]
    assert [(a["version"], a["default"]) for a in published] == [("a", False), ("b", True)]


@pytest.mark.parametrize(
    "engine, adapters, message",
    [
        (ARGS["engine"], [{"version": "a", "source": "/a"}], "enable_lora"),
        (LORA_ENGINE, [{"version": "a", "source": "/a"}] * 2, "unique"),
        (LORA_ENGINE, [{"version": "1", "source": "/a"}], "base model's own version"),
        (
            LORA_ENGINE,
            [{"version": v, "source": "/a", "default": True} for v in "ab"],
            "at most one",
        ),
        (LORA_ENGINE, [{"version": "a b", "source": "/a"}], "pattern"),
    ],
)
def test_adapter_lists_that_cannot_be_served_fail_the_build(engine, adapters, message):
    with pytest.raises(ValidationError, match=message):
        build_app({**ARGS, "engine": engine, "adapters": adapters})
