"""Typed fake engines: each implements its Protocol in deployments/engines.py, so the
servers run unchanged on top of them (unit tests, and e2e fault injection through
`build_app_with_engine(..., engine_cls=...)`). Features are tested on the real engines; these
script outputs and record what the server asked for (starts, aborts, shutdowns)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from deployments.contract import SamplingOptions, ToolCall
from deployments.embeddings.config import EmbeddingEngineConfig
from deployments.embeddings.pooling import PoolingSpec
from deployments.engines import (
    AdapterRef,
    EmbeddingEngineClass,
    ImageEngineClass,
    LLMEngineClass,
    ToolParser,
)
from deployments.errors import InvalidAdapter, InvalidInput, PromptTooLong
from deployments.images.config import ImageEngineConfig
from deployments.images.engine import PipelineBatch
from deployments.llm.config import EngineConfig
from deployments.server_base import ModelServer

# --- LLM ---------------------------------------------------------------------------


@dataclass
class FakeOutput:
    """A ChoiceStep: one choice's new text in one step."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass
class FakeStep:
    """An EngineStep: one step of one prompt."""

    outputs: list[FakeOutput]
    finished: bool = False
    prompt_logprobs: Any = None


@dataclass
class FakeParams:
    """What sampling_params was asked for (the plan passes it to stream untouched)."""

    sampling: SamplingOptions
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


class FakeClientError(Exception):
    """An error the fake engine calls the client's (like vLLM's VLLMClientError)."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class FakeToolParser:
    """Reads calls written as `CALL name {json}` on their own line."""

    def extract(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCall]]:
        calls: list[ToolCall] = []
        content: list[str] = []
        for line in text.splitlines():
            if line.startswith("CALL "):
                name, _, arguments = line[len("CALL ") :].partition(" ")
                calls.append(ToolCall(f"call_{len(calls)}", name, arguments or "{}"))
            else:
                content.append(line)
        return ("\n".join(content) or None) if calls else text, calls


class FakeEngine:
    """An LLMEngine that streams `pieces` as each choice's text, one piece per step.

    Each prompt token is one word of the text (`encode`); ids are valid below
    `VOCAB`. A choice ends with "stop" after the last piece, or "length" at the
    request's max_tokens (one token per piece). With a LoRA adapter, each choice's
    text starts with "[adapter name] " (same token ids), so tests see which weights
    answered; an adapter whose path contains "corrupt" fails to load.
    """

    VOCAB = 100
    pieces: tuple[str, ...] = ("Hello", " world", "!")
    step_delay_s = 0.0

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        self.config = config
        self.model_path = model_path
        self.max_model_len = 64
        self.started = False
        self.shut_down = False
        self.streamed: list[str] = []
        self.aborted: list[str] = []
        self.adapter_loads: list[AdapterRef] = []  # every load_adapter call, in order
        self.adapter_unloads: list[AdapterRef] = []  # every unload_adapter call, in order
        self.adapters: dict[int, AdapterRef] = {}  # loaded now, by int_id
        self.stream_adapters: list[str | None] = []  # per stream call: its adapter's name
        self._running = 0
        self.prefix_cache = {"queries": 0, "hits": 0}

    async def start(self) -> None:
        self.started = True

    def shutdown(self) -> None:
        self.shut_down = True

    async def check_health(self) -> None: ...

    def num_unfinished_requests(self) -> int:
        return self._running

    def prefix_cache_counts(self) -> dict[str, int]:
        return dict(self.prefix_cache)

    def tool_parser(self, name: str) -> ToolParser:
        return FakeToolParser()

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if any(m.get("role") == "bad" for m in messages):
            from jinja2 import TemplateError

            raise TemplateError("roles must alternate")
        return [1, 2, 3]

    def encode(self, text: str) -> list[int]:
        return [1 + len(word) % (self.VOCAB - 1) for word in text.split()] or [1]

    def decode(self, ids: list[int]) -> str:
        return " ".join("w" for _ in ids)

    def check_token_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if not 0 <= i < self.VOCAB]
        if bad:
            raise InvalidInput(f"token id {bad[0]} is outside the vocabulary", parameter="prompt")

    def sampling_params(
        self,
        sampling: SamplingOptions,
        prompt_len: int,
        *,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        json_schema: dict[str, Any] | None = None,
        json_object: bool = False,
    ) -> FakeParams:
        room = self.max_model_len - prompt_len
        if room < 1 or (sampling.max_tokens or 0) > room:
            raise PromptTooLong(f"{prompt_len} prompt tokens leave {room} of {self.max_model_len}")
        return FakeParams(sampling, logprobs, prompt_logprobs, json_schema, json_object)

    def script(self, params: FakeParams) -> list[FakeStep]:
        """The steps of one prompt: every choice advances one piece per step."""
        limit = params.sampling.max_tokens or len(self.pieces)
        count = min(limit, len(self.pieces))
        steps = []
        for t in range(count):
            last = t == count - 1
            reason = ("stop" if count == len(self.pieces) else "length") if last else None
            steps.append(
                FakeStep(
                    [FakeOutput(i, self.pieces[t], [t], reason) for i in range(params.sampling.n)],
                    finished=last,
                )
            )
        return steps

    async def load_adapter(self, adapter: AdapterRef) -> None:
        self.adapter_loads.append(adapter)
        if "corrupt" in adapter.path:
            raise InvalidAdapter("its files are not a valid PEFT LoRA adapter for this model")
        self.adapters.setdefault(adapter.int_id, adapter)

    async def unload_adapter(self, adapter: AdapterRef) -> None:
        self.adapter_unloads.append(adapter)
        self.adapters.pop(adapter.int_id, None)

    async def stream(
        self,
        prompt_ids: list[int],
        params: Any,
        request_id: str,
        adapter: AdapterRef | None = None,
    ) -> AsyncGenerator[FakeStep, None]:
        self._running += 1
        self.streamed.append(request_id)
        self.stream_adapters.append(adapter.name if adapter is not None else None)
        try:
            for t, step in enumerate(self.script(params)):
                if adapter is not None and t == 0:
                    for out in step.outputs:
                        out.text = f"[{adapter.name}] {out.text}"
                await asyncio.sleep(self.step_delay_s)
                yield step
        finally:
            self._running -= 1

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def is_client_error(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeClientError)


class FailingEngine(FakeEngine):
    """Streams `steps` outputs, then fails the way a dying engine does."""

    steps = 2

    async def stream(
        self,
        prompt_ids: list[int],
        params: Any,
        request_id: str,
        adapter: AdapterRef | None = None,
    ) -> AsyncGenerator[FakeStep, None]:
        self._running += 1
        self.streamed.append(request_id)
        try:
            for i in range(self.steps):
                yield FakeStep([FakeOutput(0, f"tok{i} ", [i])])
            raise RuntimeError("engine core died: secret internal detail 0xdeadbeef")
        finally:
            self._running -= 1


class SlowEngine(FakeEngine):
    """Holds each request for a while (to fill a replica and its queue), then ends."""

    pieces = ("t0", "t1", "t2", "t3", "t4")
    step_delay_s = 0.2


# --- Embeddings --------------------------------------------------------------------


class FakeEmbeddingEngine:
    """An EmbeddingEngine whose vector for an input is one-hot at (2nd token % 4)."""

    def __init__(
        self,
        config: EmbeddingEngineConfig,
        model_path: str,
        spec: PoolingSpec,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.max_input_tokens = 8
        self.vocab_size = 50
        self.dimensions = 4
        self.batch_sizes: Counter[int] = Counter()
        self.fail: BaseException | None = None
        self.shut_down = False

    async def start(self) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None:
        self.shut_down = True

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        ids = [[1, *(len(w) for w in t.split()), 2] for t in texts]
        return [i[:max_tokens] for i in ids] if max_tokens else ids

    async def embed(self, token_ids: list[list[int]], request_id: str) -> np.ndarray:
        if self.fail is not None:
            raise self.fail
        self.batch_sizes[len(token_ids)] += 1
        out = np.zeros((len(token_ids), self.dimensions), dtype=np.float32)
        for row, ids in zip(out, token_ids, strict=True):
            row[ids[1] % self.dimensions] = 1.0
        return out


# --- Images ------------------------------------------------------------------------


class FakeImageEngine:
    """An ImageEngine whose "images" are strings naming prompt and seed.

    `fail` makes every run raise; `fail_on` makes a run raise when any prompt in it
    contains that text (one bad request in a batch).
    """

    def __init__(self, config: ImageEngineConfig, model_path: str) -> None:
        self.config = config
        self.batches: list[PipelineBatch] = []
        self.fail: BaseException | None = None
        self.fail_on: str | None = None
        self.shut_down = False

    async def start(self) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None:
        self.shut_down = True

    async def run(self, batch: PipelineBatch) -> list[Any]:
        if self.fail is not None:
            raise self.fail
        if self.fail_on is not None and any(self.fail_on in p for p in batch.prompts):
            raise RuntimeError(f"pipeline failed on a prompt with {self.fail_on!r}")
        self.batches.append(batch)
        return [f"{p}:{s}" for p, s in zip(batch.prompts, batch.seeds, strict=True)]

    async def encode(
        self, images: list[Any], output_format: str, quality: int | None
    ) -> list[bytes]:
        return [f"{output_format}:{image}".encode() for image in images]


ServerT = TypeVar("ServerT", bound=ModelServer[Any, Any])


async def start_server(
    server_cls: type[ServerT], config: dict[str, Any], engine_cls: Any
) -> ServerT:
    """Constructs a model server as Serve does: `__new__`, then the awaited async
    `__init__` (calling the class would return the un-awaited coroutine)."""
    server = server_cls.__new__(server_cls)
    await server.__init__(config, engine_cls=engine_cls)  # type: ignore[misc]
    return server


# mypy checks here that each fake implements its engine protocol.
_LLM: LLMEngineClass = FakeEngine
_EMBEDDINGS: EmbeddingEngineClass = FakeEmbeddingEngine
_IMAGES: ImageEngineClass = FakeImageEngine
