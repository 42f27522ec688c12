"""What crosses a Serve handle between the ingress and a model deployment.

This module is the only one both sides import. It uses the standard library and
pydantic alone, so the ingress never pulls in an engine (vllm, torch, diffusers) and
a model deployment never pulls in starlette.

Hot-path values (one per engine step) are slotted dataclasses: they are pickled for
every streamed item, and a dataclass pickles several times faster than a pydantic
model. Values made once per request or per deploy are pydantic models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["chat", "completion", "embeddings", "image"]

# Key under which every model application publishes its ModelCard in the Serve
# deployment's `user_config`. The controller stores it as soon as the application is
# deployed, before any replica runs, which is what lets the ingress route to a model
# that is still starting (see ingress/catalog.py).
MODEL_CARD_KEY = "openai_serve_model_card"


class ModelCard(BaseModel):
    """The identity a model application publishes at deploy time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Public model name, e.g. 'google/gemma-3-270m'.")
    aliases: tuple[str, ...] = Field(
        default=(), description="More names that address this model like `model`."
    )
    version: str = Field(description="Version label; 'NAME:VERSION' addresses it.")
    tasks: tuple[Task, ...] = Field(description="Endpoints this application serves.")
    default: bool = Field(
        default=False, description="Whether plain 'NAME' resolves to this version."
    )
    max_model_len: int | None = Field(default=None, description="Context length.")
    owned_by: str = Field(default="openai-serve", description="Shown in /models.")


@dataclass(slots=True)
class ErrorInfo:
    """A failure a deployment reports instead of raising across the handle.

    The ingress turns it into the OpenAI error body and picks the HTTP status; it is
    the only place that does (ingress/errors.py).
    """

    message: str
    status: int = 400
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class SamplingOptions(BaseModel):
    """Engine-neutral sampling fields, already validated by the ingress."""

    model_config = ConfigDict(extra="forbid")

    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False


class GenerateRequest(BaseModel):
    """One chat or completion call, as the LLM deployment receives it."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    kind: Literal["chat", "completion"]
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="Chat messages (OpenAI shape), for kind='chat'."
    )
    prompt: str | list[int] | None = Field(
        default=None, description="Text or token ids, for kind='completion'."
    )
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)


@dataclass(slots=True)
class ChoiceDelta:
    """New output of one choice since the previous chunk."""

    index: int
    text: str
    num_tokens: int
    finish_reason: str | None = None


@dataclass(slots=True)
class GenerationChunk:
    """One engine step. `prompt_tokens` and totals come from the engine's counts."""

    deltas: list[ChoiceDelta]
    prompt_tokens: int
    completion_tokens: int
    finished: bool = False


@dataclass(slots=True)
class GenerationResult:
    """A whole non-streamed generation: one text per choice."""

    texts: list[str]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


class LLMDeployment(Protocol):
    """What the ingress may call on an LLM application's handle.

    Errors the caller caused never raise across the handle: they come back as an
    ErrorInfo value, so the ingress can pick the status before it sends a byte.
    """

    def generate(
        self, request: GenerateRequest
    ) -> AsyncIterator[GenerationChunk | ErrorInfo]:
        """Streams a generation.

        Yields:
            An ErrorInfo first and only if the request is rejected; otherwise
            GenerationChunks, the last with `finished=True`; an ErrorInfo after
            chunks if the engine fails mid-stream. Cancelling the iteration aborts
            the engine request.
        """
        ...

    async def complete(self, request: GenerateRequest) -> GenerationResult | ErrorInfo:
        """Runs a generation to the end and returns it whole."""
        ...
