"""Model apps bind one way: merged options, derived name, model card, engine_cls pass-through."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from deployments.contract import ADAPTERS_KEY, MODEL_CARD_ENV, MODEL_CARD_KEY
from deployments.llm.config import LLMAppConfig
from deployments.llm.server import LLMServer
from deployments.options import (
    MODEL_DEPLOYMENT_BASE,
    QUEUED_PER_ONGOING,
    bind_model_app,
    deployment_name,
    merge_options,
    model_options,
)
from tests.fakes import FakeEngine


def test_nested_dicts_merge_and_other_values_replace():
    defaults = {
        "num_replicas": 1,
        "max_ongoing_requests": 8,
        "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": {"A": "1"}}},
    }
    merged = merge_options(
        defaults,
        {
            "max_ongoing_requests": 2,
            "ray_actor_options": {"num_gpus": 1, "runtime_env": {"env_vars": {"B": "2"}}},
        },
    )
    assert merged == {
        "num_replicas": 1,
        "max_ongoing_requests": 2,
        "ray_actor_options": {
            "num_cpus": 1,
            "num_gpus": 1,
            "runtime_env": {"env_vars": {"A": "1", "B": "2"}},
        },
    }
    assert defaults["ray_actor_options"]["runtime_env"]["env_vars"] == {"A": "1"}


def test_autoscaling_replaces_a_default_replica_count_only():
    auto = {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}}
    assert "num_replicas" not in merge_options({"num_replicas": 1}, auto)
    assert (
        merge_options({"num_replicas": 1}, {**auto, "num_replicas": "auto"})["num_replicas"]
        == "auto"
    )


def test_deployment_name_is_readable_and_serve_safe():
    assert deployment_name("LLM", "google/gemma-3-270m", "q4km bf16") == (
        "LLM:google-gemma-3-270m-q4km-bf16"
    )


def _config(**deployment) -> LLMAppConfig:
    return LLMAppConfig(model="org/m", version="2", model_source="/tmp", deployment=deployment)


def test_bind_publishes_the_card_and_merges_over_the_shared_base():
    app = bind_model_app(
        LLMServer,
        _config(max_ongoing_requests=3),
        {"max_ongoing_requests": 9, "health_check_period_s": 5},
        "LLM",
    )
    deployment = app._bound_deployment
    assert deployment.func_or_class is LLMServer and deployment.name == "LLM:org-m-2"
    assert deployment.max_ongoing_requests == 3
    assert deployment._deployment_config.health_check_period_s == 5
    env_vars = dict(deployment.ray_actor_options["runtime_env"]["env_vars"])
    card_copy = json.loads(env_vars.pop(MODEL_CARD_ENV))
    assert env_vars == MODEL_DEPLOYMENT_BASE["ray_actor_options"]["runtime_env"]["env_vars"]
    card = deployment.user_config[MODEL_CARD_KEY]
    assert (card["model"], card["version"], card["tasks"]) == ("org/m", "2", ["chat", "completion"])
    assert card_copy == card  # survives a user_config override (ingress/catalog.py)
    assert deployment.user_config[ADAPTERS_KEY] == []  # the LLM's live settings
    assert deployment.init_args == (_config(max_ongoing_requests=3).model_dump(mode="json"),)


def test_engine_cls_is_passed_only_when_given():
    assert bind_model_app(LLMServer, _config(), {}, "LLM")._bound_deployment.init_kwargs == {}
    app = bind_model_app(LLMServer, _config(), {}, "LLM", engine_cls=FakeEngine)
    assert app._bound_deployment.init_kwargs == {"engine_cls": FakeEngine}


@pytest.mark.parametrize("reserved", ["user_config", "name"])
def test_the_config_may_not_set_what_the_binding_owns(reserved):
    with pytest.raises(ValidationError, match=f"deployment.{reserved}"):
        _config(**{reserved: "x"})


@pytest.mark.parametrize(
    "deployment, queued",
    [
        ({}, 2 * 9),  # the task's max_ongoing_requests, twice over
        ({"max_ongoing_requests": 3}, 2 * 3),  # the config's
        ({"max_queued_requests": 7}, 7),  # set outright
        ({"max_queued_requests": -1}, -1),  # unbounded, as in Serve
    ],
)
def test_serve_queue_is_bounded_by_default(deployment, queued):
    app = bind_model_app(LLMServer, _config(**deployment), {"max_ongoing_requests": 9}, "LLM")
    assert app._bound_deployment.max_queued_requests == queued


def test_model_options_leave_their_inputs_alone():
    defaults = {"max_ongoing_requests": 4}
    options = model_options(defaults, {})
    assert options["max_queued_requests"] == QUEUED_PER_ONGOING * 4
    assert defaults == {"max_ongoing_requests": 4}
    assert "max_queued_requests" not in MODEL_DEPLOYMENT_BASE
