"""Typed arguments of an LLM application: what one entry of serve_config.yaml says.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy`
with a message naming the field, before any replica starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.app_config import ModelAppConfig, VLLMEngineConfig
from deployments.contract import ADAPTERS_KEY, AdapterSpec, ModelCard
from deployments.routing.config import RoutingConfig


class EngineConfig(VLLMEngineConfig):
    """How the LLM engine is built. `engine_kwargs` go to vLLM's AsyncEngineArgs as-is."""


class LLMLimits(BaseModel):
    """Bounded work per request, as this model sees it: checked by its replicas, which
    know the tokenizer and the context (deployments/llm/plan.py). The ingress checks
    what needs no model first (ingress/bounds.py); the lower bound wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sequences_per_request: int = Field(
        default=64,
        ge=1,
        description="Sequences one request generates: prompts × n (completions), n (chat).",
    )
    max_prompt_tokens_per_request: int | None = Field(
        default=None,
        ge=1,
        description="Prompt tokens of one request, all prompts together; None: 4 × "
        "the context length.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Cap on max_tokens (larger asks get a 400), and the default when a "
        "request names none (else: what the context leaves). None: the context length. "
        "Under ignore_eos, sequences × max_tokens must fit it too, since every sequence "
        "then runs to max_tokens.",
    )
    max_logprob_entries: int = Field(
        default=500_000,
        ge=1,
        description="Logprob entries one answer may carry: sequences × max_tokens × (top "
        "logprobs + 1), plus prompt tokens × n × (top + 1) under echo.",
    )


class LLMAppConfig(ModelAppConfig):
    """An LLM version (chat, completions) served as its own Serve application."""

    tasks: tuple[Literal["chat", "completion"], ...] = Field(
        default=("chat", "completion"), description="Endpoints this model serves."
    )
    tool_call_parser: str | None = Field(
        default=None,
        description="vLLM tool parser for this model's own tool-call "
        "format (e.g. 'hermes', 'llama3_json', 'mistral'), used for tool_choice 'auto'. "
        "Without one, 'auto' answers in text; 'required' and named calls always work "
        "(guided decoding).",
    )
    engine: EngineConfig = Field(
        default_factory=EngineConfig, description="The vLLM generation engine."
    )
    limits: LLMLimits = Field(
        default_factory=LLMLimits,
        description="Bounded work per request (docs/production.md 'Bounded work per request').",
    )
    stream_interval_ms: float = Field(
        default=50.0,
        ge=0,
        le=1000,
        description="Least time between two streamed chunks of one request. Tokens the "
        "engine makes meanwhile travel together in the next chunk (vLLM merges them), "
        "so a fast engine does not pay the replica → ingress → proxy hops per token. "
        "The first token is never held, and a stream slower than this is never "
        "delayed. 0 sends every engine step.",
    )
    stream_hold_min_streams: int = Field(
        default=4,
        ge=1,
        description="Chunks are held for stream_interval_ms only while at least this many "
        "generations run on the replica: a lightly loaded replica sends every engine step "
        "at once (no added inter-token latency), a busy one coalesces. 1 always holds.",
    )
    background_while_online: int = Field(
        default=1,
        ge=0,
        description="Batch API lines this replica gives its engine while online requests "
        "run on it (more wait before the engine; those already running finish). With no "
        "online request running, lines pass, within the batch's share (the ingress's "
        "batches.online_share). 0 pauses batches while online traffic lasts.",
    )

    adapters: tuple[AdapterSpec, ...] = Field(
        default=(),
        description="LoRA adapters served as versions of this model on the same replicas "
        "(docs/api.md 'Versions as adapters'). Listed here, a change restarts the replicas; "
        "listed in the deployment's user_config override, it reaches them in place.",
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig,
        description="How Serve routes this model's requests among its replicas: "
        "policy 'power_of_two' (Serve's default router) or 'prefix_aware' (to the replica "
        "that served the longest prefix, under a load guard); deployments/routing/config.py.",
    )

    @model_validator(mode="after")
    def _check_tasks(self) -> LLMAppConfig:
        if not self.tasks:
            raise ValueError("tasks must name at least one endpoint")
        return self

    @model_validator(mode="after")
    def _check_adapters(self) -> LLMAppConfig:
        if not self.adapters:
            return self
        if not self.engine.engine_kwargs.get("enable_lora"):
            raise ValueError("adapters need engine.engine_kwargs.enable_lora: true")
        problem = adapter_list_problem(self.adapters, self.version)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _check_routing(self) -> LLMAppConfig:
        if self.routing.policy != "power_of_two" and "request_router_config" in self.deployment:
            raise ValueError(
                "routing.policy and deployment.request_router_config both choose the "
                "request router: set only one"
            )
        return self

    def live_config(self) -> dict[str, Any]:
        return {ADAPTERS_KEY: [a.model_dump(mode="json") for a in self.adapters]}

    def card(self, max_model_len: int | None = None) -> ModelCard:
        return ModelCard(
            **self.card_fields(),
            tasks=tuple(self.tasks),
            max_model_len=max_model_len or self.engine.engine_kwargs.get("max_model_len"),
        )


def adapter_list_problem(adapters: tuple[AdapterSpec, ...], base_version: str) -> str | None:
    """Why a list of adapters cannot be served beside `base_version`, or None."""
    versions = [a.version for a in adapters]
    if len(set(versions)) != len(versions):
        return "adapter versions must be unique"
    if base_version in versions:
        return f"adapter version {base_version!r} is the base model's own version"
    if sum(a.default for a in adapters) > 1:
        return "at most one adapter can be the default"
    return None
