"""Builds one LLM application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.contract import MODEL_CARD_KEY
from deployments.llm.config import LLMAppConfig
from deployments.llm.server import LLMServer
from deployments.options import deployment_name, merge_options

# Defaults for an LLM replica; every key can be overridden per application under
# `deployment:` in serve_config.yaml (README: "Add a model").
LLM_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "num_replicas": 1,
    # vLLM batches everything it is given; this bounds one replica's in-flight
    # requests, and Serve queues the rest (or scales out, with autoscaling).
    "max_ongoing_requests": 256,
    "health_check_period_s": 10,
    "health_check_timeout_s": 60,
    "graceful_shutdown_timeout_s": 20,
    "ray_actor_options": {
        "num_cpus": 1,
        "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    },
}


def build_app(args: dict[str, Any]) -> Application:
    """Args: one application's `args` from serve_config.yaml (LLMAppConfig)."""
    config = LLMAppConfig.model_validate(args)
    options = merge_options(LLM_DEPLOYMENT_DEFAULTS, config.deployment)
    options["name"] = deployment_name("LLM", config.model, config.version)
    options["user_config"] = {MODEL_CARD_KEY: config.card().model_dump(mode="json")}
    return serve.deployment(LLMServer).options(**options).bind(config.model_dump(mode="json"))
