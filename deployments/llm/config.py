"""Typed arguments of an LLM application: what one entry of serve_config.yaml says.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy`
with a message naming the field, before any replica starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.app_config import ModelAppConfig, VLLMEngineConfig
from deployments.contract import ModelCard


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
        description="Bounded work per request (README 'Bounded work per request').",
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

    @model_validator(mode="after")
    def _check_tasks(self) -> LLMAppConfig:
        if not self.tasks:
            raise ValueError("tasks must name at least one endpoint")
        return self

    def card(self, max_model_len: int | None = None) -> ModelCard:
        return ModelCard(
            **self.card_fields(),
            tasks=tuple(self.tasks),
            max_model_len=max_model_len or self.engine.engine_kwargs.get("max_model_len"),
        )
