"""Builds one LLM application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from deployments.engines import LLMEngineClass
from deployments.llm.server import LLMServer
from deployments.options import ModelAppBuilder

# Defaults for an LLM replica; every key can be overridden per application under
# `deployment:` in serve_config.yaml (docs/api.md: "Add a model").
LLM_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # vLLM batches everything it is given; this bounds one replica's in-flight
    # requests, and Serve queues the rest (or scales out, with autoscaling).
    "max_ongoing_requests": 256,
}

_BUILDER = ModelAppBuilder[LLMEngineClass](LLMServer, LLM_DEPLOYMENT_DEFAULTS, "LLM")
# Serve's entry (serve_config.yaml's `import_path`): a plain function of one argument.
build_app = _BUILDER.build_app
# The engine seam: (args, engine_cls=None: vLLM) -> the bound LLMServer.
build_app_with_engine = _BUILDER.build_app_with_engine
