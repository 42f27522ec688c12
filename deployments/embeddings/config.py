"""Typed arguments of an embeddings application: one entry of serve_config.yaml.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy`
with a message naming the field, before any replica starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from deployments.app_config import ModelAppConfig, VLLMEngineConfig
from deployments.contract import ModelCard

# Set by the engine from the model's own files (deployments/embeddings/pooling.py);
# letting engine_kwargs replace them would serve vectors the card does not describe.
_RESERVED_ENGINE_KWARGS = ("model", "runner", "convert", "pooler_config")


class EmbeddingEngineConfig(VLLMEngineConfig):
    """How the engine is built; pooling comes from the model directory unless set."""

    pooling: Literal["mean", "cls", "last"] | None = Field(
        default=None,
        description="Override of the pooling mode read from the "
        "sentence-transformers files (needed for a model that has none).",
    )
    normalize: bool | None = Field(
        default=None,
        description="Override of L2 normalisation (a Normalize module "
        "in modules.json turns it on).",
    )

    @model_validator(mode="after")
    def _check(self) -> EmbeddingEngineConfig:
        reserved = sorted(set(self.engine_kwargs) & set(_RESERVED_ENGINE_KWARGS))
        if reserved:
            raise ValueError(
                f"engine_kwargs may not set {reserved}: the model comes from "
                "model_source and pooling from engine.pooling / engine.normalize"
            )
        return self


class EmbeddingAppConfig(ModelAppConfig):
    """One embedding model version served as its own Serve application."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EmbeddingEngineConfig = Field(
        default_factory=EmbeddingEngineConfig, description="The vLLM pooling engine."
    )

    def card(self) -> ModelCard:
        return ModelCard(
            **self.card_fields(),
            tasks=("embeddings",),
            # The replica enforces the engine's limit: this value when set, else the
            # sentence-transformers max_seq_length of the model directory.
            max_model_len=self.engine.engine_kwargs.get("max_model_len"),
        )
