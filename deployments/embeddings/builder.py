"""Builds one embeddings application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.embeddings.config import EmbeddingAppConfig
from deployments.embeddings.server import EmbeddingServer
from deployments.options import bind_model_app

# Defaults for an embeddings replica; every key can be overridden per application
# under `deployment:` in serve_config.yaml.
EMBEDDING_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # The engine batches whatever is in flight, so a replica should hold enough
    # requests to fill its batches (engine_kwargs.max_num_seqs inputs per step);
    # Serve queues the rest, or scales out with autoscaling.
    "max_ongoing_requests": 128,
}


def build_app(args: dict[str, Any]) -> Application:
    """Builds the application.

    Args:
        args: one application's `args` from serve_config.yaml (EmbeddingAppConfig).

    Returns:
        The bound Serve application; its deployment publishes the model card.

    Raises:
        pydantic.ValidationError: for args that do not fit EmbeddingAppConfig.
    """
    config = EmbeddingAppConfig.model_validate(args)
    return bind_model_app(EmbeddingServer, config, EMBEDDING_DEPLOYMENT_DEFAULTS, "Embeddings")
