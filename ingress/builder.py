"""Builds the ingress application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application, Deployment

from deployments.contract import merge_options
from ingress.batches.supervisor import BatchSupervisor
from ingress.config import IngressConfig
from ingress.deployment import OpenAIIngress

INGRESS_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "name": "OpenAIIngress",
    "num_replicas": 1,
    # The ingress only parses, routes and frames; it holds no model, so one replica
    # multiplexes many streams. Scale it with autoscaling_config under load.
    "max_ongoing_requests": 1000,
    # Serve's proxy queues what the replicas cannot take yet; past this many (per
    # proxy) it answers at once: 429 with Retry-After, which clients retry (the
    # openai SDK does), instead of Serve's default 503 or an unbounded queue. The
    # body is Serve's plain-text message: the proxy answers before our app runs.
    "max_queued_requests": 2000,
    "backpressure_config": {"status_code": 429, "retry_after_s": 1},
    # No CPU reserved: the ingress is always placeable, on a machine whose CPUs the
    # model replicas have all taken too, because it is the one that can tell a client
    # what is wrong (a model waiting for resources: /v1/openai/models, a 503 with the
    # reason). Without it Serve's proxy would hold every request without an answer.
    "ray_actor_options": {"num_cpus": 0},
}


SUPERVISOR_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "name": "BatchSupervisor",
    # One is enough (it only drives Ray Data pipelines); more are safe: a batch runs
    # under one supervisor's lease at a time.
    "num_replicas": 1,
    "ray_actor_options": {"num_cpus": 0},
}


def build_app(args: dict[str, Any]) -> Application:
    """The ingress and, beside it, the batch supervisor (ingress/batches/supervisor.py)."""
    config = IngressConfig.model_validate(args or {})
    config_json = config.model_dump(mode="json")
    options = merge_options(INGRESS_DEPLOYMENT_DEFAULTS, config.deployment)
    supervisor: Deployment = serve.deployment(BatchSupervisor)  # type: ignore[assignment]
    supervisor_options = merge_options(SUPERVISOR_DEPLOYMENT_DEFAULTS, config.batches.supervisor)
    deployment: Deployment = serve.deployment(OpenAIIngress)  # type: ignore[assignment]
    return deployment.options(**options).bind(
        config_json, supervisor.options(**supervisor_options).bind(config_json)
    )
