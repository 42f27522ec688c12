"""The ingress builder validates first, then binds OpenAIIngress with its Serve defaults (inspected, not run)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve import Application

from ingress.builder import build_app
from ingress.deployment import OpenAIIngress


def test_defaults_bound_the_queue_and_shed_with_a_429():
    app = build_app({"auth": {"enabled": False}})
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.func_or_class is OpenAIIngress and deployment.name == "OpenAIIngress"
    assert deployment.max_ongoing_requests == 1000
    assert deployment.max_queued_requests == 2000
    assert deployment.backpressure_config.status_code == 429
    assert deployment.backpressure_config.retry_after_s == 1


def test_the_ingress_reserves_no_cpu():
    """Always placeable, even where the model replicas took every CPU: it is what tells
    the client why a model does not answer."""
    deployment = build_app({"auth": {"enabled": False}})._bound_deployment
    assert deployment.ray_actor_options["num_cpus"] == 0


def test_deployment_options_override_the_defaults():
    app = build_app(
        {
            "auth": {"enabled": False},
            "deployment": {"max_queued_requests": 10, "backpressure_config": {"retry_after_s": 5}},
        }
    )
    deployment = app._bound_deployment
    assert deployment.max_queued_requests == 10
    assert deployment.backpressure_config.status_code == 429  # merged key by key
    assert deployment.backpressure_config.retry_after_s == 5


def test_config_is_validated_before_binding():
    with pytest.raises(ValidationError):
        build_app({"auth": {"protect_metric": False}})
