"""Builds one LLM application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.llm.config import LLMAppConfig
from deployments.llm.server import LLMServer
from deployments.options import bind_model_app

# Defaults for an LLM replica; every key can be overridden per application under
# `deployment:` in serve_config.yaml (README: "Add a model").
LLM_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # vLLM batches everything it is given; this bounds one replica's in-flight
    # requests, and Serve queues the rest (or scales out, with autoscaling).
    "max_ongoing_requests": 256,
}


def build_app(args: dict[str, Any]) -> Application:
    """Args: one application's `args` from serve_config.yaml (LLMAppConfig)."""
    config = LLMAppConfig.model_validate(args)
    return bind_model_app(LLMServer, config, LLM_DEPLOYMENT_DEFAULTS, "LLM")
