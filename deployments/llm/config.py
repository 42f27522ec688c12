"""Typed arguments of an LLM application: what one entry of serve_config.yaml says.

Validated first thing in the builder, so a typo in the YAML fails `serve deploy`
with a message naming the field, before any replica starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.app_config import ModelAppConfig
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


class LLMAppConfig(ModelAppConfig):
    """An LLM version (chat, completions) served as its own Serve application."""

    tasks: tuple[Literal["chat", "completion"], ...] = Field(
        default=("chat", "completion"), description="Endpoints this model serves."
    )
    tool_call_parser: str | None = Field(
        default=None, description="vLLM tool parser for this model's own tool-call "
        "format (e.g. 'hermes', 'llama3_json', 'mistral'), used for tool_choice 'auto'. "
        "Without one, 'auto' answers in text; 'required' and named calls always work "
        "(guided decoding).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    stream_interval_ms: float = Field(
        default=50.0, ge=0, le=1000,
        description="Least time between two streamed chunks of one request. Tokens the "
        "engine makes meanwhile travel together in the next chunk (vLLM merges them), "
        "so a fast engine does not pay the replica → ingress → proxy hops per token. "
        "The first token is never held, and a stream slower than this is never "
        "delayed. 0 sends every engine step.",
    )

    @model_validator(mode="after")
    def _check_tasks(self) -> "LLMAppConfig":
        if not self.tasks:
            raise ValueError("tasks must name at least one endpoint")
        return self

    def card(self, max_model_len: int | None = None) -> ModelCard:
        return ModelCard(
            **self.card_fields(),
            tasks=tuple(self.tasks),
            max_model_len=max_model_len or self.engine.engine_kwargs.get("max_model_len"),
        )
