"""The engine seam: what each model server may call on its engine.

One Protocol per deployment kind, each spelling out what its methods yield or return,
so a server depends on this surface and not on vLLM or diffusers. The real engines
(deployments/llm/vllm_engine.py, deployments/embeddings/engine.py,
deployments/images/engine.py) and the typed fakes of the tests implement them; the
engine class reaches a server through `.bind(engine_cls=...)` (the builders'
`engine_cls=`), never through an environment variable.

Members a server only reads are read-only properties here, so an implementation may
hold them as plain attributes of a narrower type (a list where a Sequence is asked).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from deployments.contract import SamplingOptions, ToolCall
from deployments.embeddings.config import EmbeddingEngineConfig
from deployments.embeddings.pooling import PoolingSpec
from deployments.images.config import ImageEngineConfig
from deployments.images.engine import PipelineBatch
from deployments.llm.config import EngineConfig

if TYPE_CHECKING:
    import numpy as np


class ModelEngine(Protocol):
    """The lifecycle every engine shares (driven by deployments/server_base.py)."""

    async def start(self) -> None:
        """Loads the model; the server bounds it with the config's `start_timeout_s`.

        Raises:
            Exception: the engine cannot start (the replica then fails to start).
        """
        ...

    async def check_health(self) -> None:
        """Returns while the engine can serve.

        Raises:
            Exception: only when the engine is dead; Serve then replaces the replica.
        """
        ...

    def shutdown(self) -> None:
        """Releases the engine's processes, threads and memory; idempotent."""
        ...


# --- LLM (deployments/llm) -----------------------------------------------------------


class ChoiceStep(Protocol):
    """New output of one choice in one engine step (vLLM's CompletionOutput, in DELTA
    mode: text and token ids since the previous step only)."""

    @property
    def index(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def token_ids(self) -> Sequence[int]: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def logprobs(self) -> Any:
        """Per new token, {token id: logprob with rank and decoded text}; or None."""
        ...


class EngineStep(Protocol):
    """One engine step of one prompt (vLLM's RequestOutput)."""

    @property
    def outputs(self) -> Sequence[ChoiceStep]: ...
    @property
    def prompt_logprobs(self) -> Any:
        """Per prompt token, as ChoiceStep.logprobs (first entry None); or None."""
        ...


class ToolParser(Protocol):
    """A model's own tool-call format (tool_choice "auto")."""

    def extract(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCall]]:
        """Reads tool calls out of a finished answer.

        Args:
            text: the whole generated text of one choice.
            tools: the request's OpenAI tool definitions.

        Returns:
            (content, calls): the text left beside the calls (None when there is
            none), and the calls; no calls when the model answered in text.
        """
        ...


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter as the engine knows it (one model version).

    Attributes:
        name: the adapter's name (e.g. the served model id of the version).
        int_id: the engine's key for it, unique per adapter and > 0; loading another
            adapter under an id in use replaces nothing, so give each one its own.
        path: the local PEFT-format directory (adapter_config.json and
            adapter_model.safetensors).
    """

    name: str
    int_id: int
    path: str


class LLMEngine(ModelEngine, Protocol):
    """What LLMServer and deployments/llm/plan.py call on a generation engine.

    Planning (`render_chat`, `encode`, `decode`, `check_token_ids`, `sampling_params`)
    runs in the server's worker threads, several requests at once, beside the engine's
    own use of its tokenizer: those methods must be safe to call so.
    """

    @property
    def max_model_len(self) -> int:
        """The context length in tokens, known once `start` returned."""
        ...

    def num_unfinished_requests(self) -> int:
        """Requests the engine holds, running or waiting (0 before start)."""
        ...

    def prefix_cache_counts(self) -> dict[str, int]:
        """Prompt tokens looked up in the prefix cache (`queries`) and found (`hits`)
        since start (deployments/llm/cache_stats.py); zeros where the engine keeps
        no stats (`disable_log_stats`)."""
        ...

    def tool_parser(self, name: str) -> ToolParser:
        """The parser of that name (e.g. "hermes").

        Raises:
            Exception: no parser has that name.
        """
        ...

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Applies the model's chat template with a generation prompt.

        Returns:
            The prompt's token ids.

        Raises:
            jinja2.TemplateError: the template rejects the messages (a client error).
        """
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of a completion prompt (with the tokenizer's special tokens)."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (for echo of a token-id prompt)."""
        ...

    def check_token_ids(self, ids: list[int]) -> None:
        """Raises ValueError (InvalidInput) for ids outside the vocabulary."""
        ...

    def sampling_params(
        self,
        sampling: SamplingOptions,
        prompt_len: int,
        *,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        json_schema: dict[str, Any] | None = None,
        json_object: bool = False,
    ) -> Any:
        """The engine's own sampling parameters for one request.

        Args:
            sampling: the request's engine-neutral options.
            prompt_len: tokens in the longest prompt, to check the context.
            logprobs: top logprobs per generated token, or None for none.
            prompt_logprobs: top logprobs per prompt token (echo), or None.
            json_schema: a schema guided decoding must follow, or None.
            json_object: whether the output must be any JSON object.

        Returns:
            An opaque value that `stream` takes.

        Raises:
            PromptTooLong: the prompt leaves no room for the output asked for.
            ValueError: an option the engine cannot take.
        """
        ...

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Loads a LoRA adapter into the engine now, so that `stream` can use it
        without touching its files; a no-op for one already loaded.

        Raises:
            InvalidAdapter: the adapter cannot be loaded (files missing or corrupt,
                a rank past the engine's maximum); the message names no path.
            RuntimeError: the engine was started without LoRA support.
        """
        ...

    async def unload_adapter(self, adapter: AdapterRef) -> None:
        """Drops a LoRA adapter from the engine; a no-op for one not loaded."""
        ...

    def stream(
        self,
        prompt_ids: list[int],
        params: Any,
        request_id: str,
        adapter: AdapterRef | None = None,
    ) -> AsyncGenerator[EngineStep, None]:
        """Runs one prompt (an async generator, so the server can close it).

        Args:
            prompt_ids: the prompt's token ids.
            params: what `sampling_params` returned.
            request_id: the engine request's id (for `abort`).
            adapter: the LoRA adapter to apply, loaded by `load_adapter` first;
                None runs the base model. Its files must stay in place while it is
                in use: vLLM reloads an adapter its cache dropped (past
                `max_cpu_loras`) from `path`, and a failure then kills the engine.

        Yields:
            One EngineStep per engine step, deltas only; the last one carries every
            choice's finish_reason. Closing (`aclose`) or cancelling the iteration
            frees the engine request.

        Raises:
            Exception: the engine failed; `is_client_error` tells whose fault it is.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Drops the request from the engine; a no-op for an unknown id."""
        ...

    def is_client_error(self, exc: BaseException) -> bool:
        """Whether the engine raised `exc` because it rejected the request itself
        (a 4xx), not because it failed serving it."""
        ...


LLMEngineClass = Callable[[EngineConfig, str], LLMEngine]
"""An LLM engine class: called with the engine config and the model directory."""


# --- Embeddings (deployments/embeddings) ---------------------------------------------


class EmbeddingEngine(ModelEngine, Protocol):
    """What EmbeddingServer calls on a pooling engine. The sizes below are known
    once `start` returned."""

    @property
    def max_input_tokens(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def dimensions(self) -> int:
        """Components per vector the model makes."""
        ...

    @property
    def batch_sizes(self) -> Mapping[int, int]:
        """{inputs per engine step: steps} since start (warm-up excluded)."""
        ...

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids of each text, with the model's special tokens.

        Args:
            texts: the inputs.
            max_tokens: cut each to this many tokens; None: no cut.

        Returns:
            One list of ids per text, in order. Called off the event loop.
        """
        ...

    async def embed(self, token_ids: list[list[int]], request_id: str) -> np.ndarray:
        """Pools each token-id list into one vector, batched with other requests.

        Returns:
            A float32 array of shape (len(token_ids), dimensions), in input order.

        Raises:
            Exception: the engine failed (the server reports an internal error).
        """
        ...


class EmbeddingEngineClass(Protocol):
    """An embeddings engine class: the config, the model directory, the resolved
    pooling, and a callback for each engine step's batch size (a metric)."""

    def __call__(
        self,
        config: EmbeddingEngineConfig,
        model_path: str,
        spec: PoolingSpec,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> EmbeddingEngine: ...


# --- Images (deployments/images) -----------------------------------------------------


class ImageEngine(ModelEngine, Protocol):
    """What ImageServer calls on a text-to-image pipeline."""

    async def run(self, batch: PipelineBatch) -> list[Any]:
        """Runs one pipeline call off the event loop.

        Returns:
            One image (a PIL image for diffusers) per prompt of the batch, in order.

        Raises:
            Exception: the pipeline failed (every request of the batch gets an
                internal error).
        """
        ...

    async def encode(
        self, images: list[Any], output_format: str, quality: int | None
    ) -> list[bytes]:
        """Encodes images from `run` off the event loop.

        Args:
            images: what `run` returned (or a part of it).
            output_format: "png", "jpeg" or "webp".
            quality: JPEG/WEBP quality 0-100; None: the encoder's default.

        Returns:
            The encoded files, in order.
        """
        ...


ImageEngineClass = Callable[[ImageEngineConfig, str], ImageEngine]
"""An image engine class: called with the engine config and the model directory."""
