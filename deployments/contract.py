"""What crosses a Serve handle between the ingress and a model deployment.

This module is the only one both sides import. It uses the standard library and
pydantic alone, so the ingress never pulls in an engine (vllm, torch, diffusers) and
a model deployment never pulls in starlette.

Hot-path values (one per engine step) are slotted dataclasses: they are pickled for
every streamed item, and a dataclass pickles several times faster than a pydantic
model. Values made once per request or per deploy are pydantic models.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["chat", "completion", "embeddings", "image"]

# Key under which every model application publishes its ModelCard in the Serve
# deployment's `user_config`. The controller stores it as soon as the application is
# deployed, before any replica runs, which is what lets the ingress route to a model
# that is still starting (see ingress/catalog.py).
MODEL_CARD_KEY = "openai_serve_model_card"
# The same card, in the replicas' environment (runtime_env env_vars): Serve replaces a
# deployment's whole `user_config` when serve_config.yaml overrides it (which is how
# adapters change in place, below), and the card must survive that.
MODEL_CARD_ENV = "OPENAI_SERVE_MODEL_CARD"
# Key of an LLM deployment's `user_config` that lists its LoRA adapters (AdapterSpec).
# user_config is the one deployment option Serve applies to running replicas in place
# (`reconfigure`), so adapters come and go without restarting the engine.
ADAPTERS_KEY = "adapters"


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
        default=200,
        ge=1,
        description="Requests in flight per ingress replica before "
        "the next one gets a 429 rate_limited.",
    )
    wait_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a request may wait for a replica "
        "(cold start, scale from zero) before a 503 model_not_ready.",
    )
    owned_by: str = Field(default="openai-serve", description="Shown in /models.")
    base_version: str | None = Field(
        default=None,
        description="For a version that is a LoRA adapter: the version of the base it "
        "runs on (set by the catalog, not by a builder).",
    )


class AdapterSpec(BaseModel):
    """A version of an LLM that is a LoRA adapter over the application's base model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Version label: 'NAME:VERSION' addresses the adapter.",
    )
    source: str = Field(
        min_length=1,
        description="Adapter directory (PEFT format), or 'fixture:tiny-lora?seed=N' "
        "(deployments/models/sources.py).",
    )
    default: bool = Field(
        default=False, description="Whether plain 'NAME' resolves to this adapter."
    )
    max_concurrent_requests: int | None = Field(
        default=None,
        ge=1,
        description="Its own in-flight bound per ingress replica; None: it shares the "
        "base version's.",
    )

    @property
    def model_id(self) -> str:
        """Serve's multiplexed model id: the version and its source, so that changing
        an adapter's files under the same version loads the new weights."""
        digest = hashlib.sha256(self.source.encode()).hexdigest()[:12]
        return f"{self.version}@{digest}"


# Where a starting model replica says what it is doing (deployments/progress.py writes
# it to Ray's internal KV; ingress/catalog.py reads it beside the controller's
# details, for /v1/openai/models). One key per replica: the ingress asks for exactly
# the replicas the controller lists as STARTING, so a key a crashed replica left
# behind is never read.
PROGRESS_NAMESPACE = "openai_serve"


def progress_key(deploy_id: str, replica_id: str) -> str:
    """The KV key of one replica's startup progress.

    Args:
        deploy_id: the Serve application's name.
        replica_id: the replica's unique id, as the controller's details list it.
    """
    return f"startup/{deploy_id}/{replica_id}"


class StartupProgress(BaseModel):
    """One step of a model replica's start: "preparing model: converting weights (3/5)"."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    doing: str = Field(description="What the replica is doing, for people to read.")
    step: int = Field(ge=1, description="This step's number, from 1.")
    total: int = Field(ge=1, description="How many steps this stage has.")

    def describe(self) -> str:
        return f"{self.doing} ({self.step}/{self.total})"


# What went wrong, in terms both sides share. The deployment decides the kind (it
# knows what failed); the ingress alone maps a kind to an HTTP status, an OpenAI
# error type and a default code (ingress/errors.py).
ErrorKind = Literal[
    "invalid_request",  # the caller's input cannot be served (400)
    "context_length",  # the prompt (plus max_tokens) exceeds the model's context (400)
    "not_found",  # the thing asked for does not exist on this replica (404)
    "unavailable",  # the model cannot serve right now; retrying later may work (503)
    "overloaded",  # the replica is full; retry after a short wait (429)
    "internal",  # our fault; the message names a request id, never internals (500)
]


@dataclass(slots=True)
class ErrorInfo:
    """A failure a deployment reports instead of raising across the handle.

    Built on the deployments side by deployments/errors.py; turned into the OpenAI
    error body, with its status, by ingress/errors.py alone.
    """

    message: str
    kind: ErrorKind = "invalid_request"
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
    task: Literal["chat", "completion"]
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="Chat messages (OpenAI shape), for task='chat'."
    )
    prompts: list[str | list[int]] = Field(
        default_factory=list,
        description="Completion prompts (text or token ids); choice index = prompt_index * n + i.",
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
        default=None,
        description="{'type': 'json_object'} or {'type': 'json_schema', "
        "'schema': {...}} (already normalised by the ingress).",
    )
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    adapter: AdapterSpec | None = Field(
        default=None, description="The LoRA adapter to run on; None: the base model."
    )
    background: bool = Field(
        default=False,
        description="A Batch API line: it yields to online requests on the replica "
        "(deployments/llm/online_first.py).",
    )


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

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk | ErrorInfo]:
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
        default=None,
        description="Keep the first N components (re-normalised when the "
        "model's vectors are); None: all of them.",
    )
    truncate_prompt_tokens: int | None = Field(
        default=None,
        description="Cut longer inputs to this many tokens (-1: the "
        "model's maximum); None: a longer input is an error.",
    )


@dataclass(slots=True)
class EmbeddingResult:
    """The vectors of one request, in input order.

    Each vector is little-endian float32 bytes: a quarter of the pickled size of a
    float list, exact, and already what the `base64` encoding format sends.
    """

    vectors: list[bytes]
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


# --- Serve deployment options (both sides' builders) --------------------------------


def merge_options(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Serve deployment options: a task's defaults with a config's `deployment:` over
    them. One rule for every builder, ingress and models alike: nested dicts
    (ray_actor_options, runtime_env, env_vars, autoscaling_config) merge key by key,
    anything else in the overrides replaces the default.

    Args:
        defaults: the builder's defaults (not modified).
        overrides: the config's options (not modified).

    Returns:
        A new dict.
    """
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    # A fixed replica count and an autoscaling config exclude each other in Serve.
    if "autoscaling_config" in overrides and "num_replicas" not in overrides:
        merged.pop("num_replicas", None)
    return merged
