"""Builds one embeddings application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from deployments.embeddings.server import EmbeddingServer
from deployments.engines import EmbeddingEngineClass
from deployments.options import ModelAppBuilder

# Defaults for an embeddings replica; every key can be overridden per application
# under `deployment:` in serve_config.yaml.
EMBEDDING_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # The engine batches whatever is in flight, so a replica should hold enough
    # requests to fill its batches (engine_kwargs.max_num_seqs inputs per step);
    # Serve queues the rest, or scales out with autoscaling.
    "max_ongoing_requests": 128,
}

_BUILDER = ModelAppBuilder[EmbeddingEngineClass](
    EmbeddingServer, EMBEDDING_DEPLOYMENT_DEFAULTS, "Embeddings"
)
# Serve's entry (serve_config.yaml's `import_path`): a plain function of one argument.
build_app = _BUILDER.build_app
# The engine seam: (args, engine_cls=None: vLLM's pooling) -> the bound EmbeddingServer.
build_app_with_engine = _BUILDER.build_app_with_engine
