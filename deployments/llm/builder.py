"""Builds one LLM application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.engines import LLMEngineClass
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
    """Serve's entry (the `import_path` of serve_config.yaml): Serve calls a builder
    with exactly one argument and refuses any other signature, so the engine seam is
    `build_app_with_engine`."""
    return build_app_with_engine(args)


def build_app_with_engine(
    args: dict[str, Any], engine_cls: LLMEngineClass | None = None
) -> Application:
    """Builds the Serve application for one LLM version.

    Args:
        args: one application's `args` from serve_config.yaml (LLMAppConfig).
        engine_cls: the engine class the replicas use; None: vLLM. Tests pass a
            fake (tests/fakes.py).

    Returns:
        The bound LLMServer deployment, its model card in `user_config`.

    Raises:
        pydantic.ValidationError: `args` does not describe a valid LLMAppConfig.
    """
    config = LLMAppConfig.model_validate(args)
    return bind_model_app(LLMServer, config, LLM_DEPLOYMENT_DEFAULTS, "LLM", engine_cls=engine_cls)
