"""Builds the ingress application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.options import merge_options
from ingress.config import IngressConfig
from ingress.deployment import OpenAIIngress

INGRESS_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "name": "OpenAIIngress",
    "num_replicas": 1,
    # The ingress only parses, routes and frames; it holds no model, so one replica
    # multiplexes many streams. Scale it with autoscaling_config under load.
    "max_ongoing_requests": 1000,
    "ray_actor_options": {"num_cpus": 0.5},
}


def build_app(args: dict[str, Any]) -> Application:
    config = IngressConfig.model_validate(args or {})
    options = merge_options(INGRESS_DEPLOYMENT_DEFAULTS, config.deployment)
    return serve.deployment(OpenAIIngress).options(**options).bind(config.model_dump(mode="json"))
