"""Builds one embeddings application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.embeddings.config import EmbeddingAppConfig
from deployments.embeddings.server import EmbeddingServer
from deployments.engines import EmbeddingEngineClass
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
    """Serve's entry (the `import_path` of serve_config.yaml): Serve calls a builder
    with exactly one argument and refuses any other signature, so the engine seam is
    `build_app_with_engine`."""
    return build_app_with_engine(args)


def build_app_with_engine(
    args: dict[str, Any], engine_cls: EmbeddingEngineClass | None = None
) -> Application:
    """Builds the Serve application for one embedding model version.

    Args:
        args: one application's `args` from serve_config.yaml (EmbeddingAppConfig).
        engine_cls: the engine class the replicas use; None: vLLM's pooling runner.

    Returns:
        The bound EmbeddingServer deployment, its model card in `user_config`.

    Raises:
        pydantic.ValidationError: `args` does not describe a valid EmbeddingAppConfig.
    """
    config = EmbeddingAppConfig.model_validate(args)
    return bind_model_app(
        EmbeddingServer, config, EMBEDDING_DEPLOYMENT_DEFAULTS, "Embeddings", engine_cls=engine_cls
    )
