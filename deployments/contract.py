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
    max_concurrent_requests: int = Field(
        default=200, ge=1, description="Requests in flight per ingress replica before "
        "the next one gets a 429 rate_limited.",
    )
    wait_timeout_s: float = Field(
        default=600.0, gt=0, description="How long a request may wait for a replica "
        "(cold start, scale from zero) before a 503 model_not_ready.",
    )
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
    prompts: list[str | list[int]] = Field(
        default_factory=list,
        description="Completion prompts (text or token ids); choice index = "
        "prompt_index * n + i.",
    )
    echo: bool = Field(default=False, description="Completions: prepend the prompt.")
    logprobs: int | None = Field(
        default=None, description="None: no logprobs; k: the chosen token and k top ones."
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="OpenAI tool definitions ({type, function})."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description="'none' | 'auto' | 'required' | {type, function: {name}}."
    )
    parallel_tool_calls: bool = Field(
        default=True, description="False: at most one call per forced answer."
    )
    response_format: dict[str, Any] | None = Field(
        default=None, description="{'type': 'json_object'} or {'type': 'json_schema', "
        "'schema': {...}} (already normalised by the ingress)."
    )
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)


@dataclass(slots=True)
class TokenLogprob:
    """One position's logprob: the chosen token and the top alternatives."""

    token: str
    logprob: float | None  # None for the first prompt token under echo
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON document, as OpenAI sends it


@dataclass(slots=True)
class ChoiceDelta:
    """New output of one choice since the previous chunk (or, in a GenerationResult,
    the whole output of one choice)."""

    index: int
    text: str
    num_tokens: int
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None


@dataclass(slots=True)
class GenerationChunk:
    """One engine step. `prompt_tokens` and totals come from the engine's counts."""

    deltas: list[ChoiceDelta]
    prompt_tokens: int
    completion_tokens: int
    finished: bool = False


@dataclass(slots=True)
class GenerationResult:
    """A whole non-streamed generation: one merged ChoiceDelta per choice."""

    choices: list[ChoiceDelta]
    prompt_tokens: int
    completion_tokens: int


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


# --- Embeddings (deployments/embeddings) -------------------------------------------


class EmbedRequest(BaseModel):
    """One embeddings call, as the embeddings deployment receives it.

    The ingress has checked the syntax (1 to 2048 inputs, no empty string or token
    list, dimensions >= 1); the replica checks what depends on its model (input
    length in tokens, token ids in the vocabulary, dimensions at most the model's).
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    inputs: list[str] | list[list[int]] = Field(
        description="Texts (tokenized with the model's special tokens), or token-id "
        "lists used exactly as given."
    )
    dimensions: int | None = Field(
        default=None, description="Keep the first N components (re-normalised when the "
        "model's vectors are); None: all of them."
    )
    truncate_prompt_tokens: int | None = Field(
        default=None, description="Cut longer inputs to this many tokens (-1: the "
        "model's maximum); None: a longer input is an error."
    )


@dataclass(slots=True)
class EmbeddingResult:
    """The vectors of one request, in input order.

    Each vector is little-endian float32 bytes: a quarter of the pickled size of a
    float list, exact, and already what the `base64` encoding format sends.
    """

    vectors: list[bytes]
    dimensions: int
    prompt_tokens: int


class EmbeddingDeployment(Protocol):
    """What the ingress may call on an embeddings application's handle."""

    async def embed(self, request: EmbedRequest) -> EmbeddingResult | ErrorInfo:
        """Embeds every input of the request, batched with other requests' inputs.

        Returns:
            The vectors, or an ErrorInfo for a request the model cannot serve (param
            names the field) or an engine failure (status 500). Never raises for
            either.
        """
        ...


# --- Images (deployments/images) ---------------------------------------------------

ImageFormat = Literal["png", "jpeg", "webp"]


class ImageRequest(BaseModel):
    """One images/generations call, as the image deployment receives it.

    The ingress has checked the syntax (size parsed, n in range); the replica checks
    what depends on its model (size bounds and multiple, step limit) and answers with
    an ErrorInfo naming the field.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    prompt: str
    n: int = Field(default=1, description="Images to make from this prompt.")
    width: int
    height: int
    seed: int | None = Field(
        default=None, description="Image i uses seed + i; None: a random seed."
    )
    num_inference_steps: int | None = Field(default=None, description="None: model default.")
    guidance_scale: float | None = Field(default=None, description="None: model default.")
    output_format: ImageFormat = "png"
    output_compression: int | None = Field(
        default=None, description="JPEG/WEBP quality 0-100; None: the encoder's default."
    )


@dataclass(slots=True)
class ImageResult:
    """The encoded images of one request, in order (raw bytes: base64 is wire work)."""

    images: list[bytes]
    output_format: ImageFormat
    width: int
    height: int
    seeds: list[int]
    batch_size: int  # images in the pipeline call that made them (observability)


class ImageDeployment(Protocol):
    """What the ingress may call on an image application's handle."""

    async def generate(self, request: ImageRequest) -> ImageResult | ErrorInfo:
        """Makes `request.n` images, possibly in one pipeline call with other requests.

        Returns:
            The encoded images, or an ErrorInfo for a request the model cannot serve
            (param names the field) or an engine failure (status 500). Never raises
            for either.
        """
        ...
