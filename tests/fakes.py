"""A typed fake engine for fault injection only (features are tested on real vLLM):
it streams a couple of steps, then fails the way a dying engine does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator


@dataclass
class _Output:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass
class _RequestOutput:
    outputs: list[_Output]
    finished: bool = False
    prompt_logprobs: Any = None
    prompt_token_ids: list[int] = field(default_factory=list)


class FailingEngine:
    """Implements the engine surface LLMServer uses; fails after `steps` outputs."""

    steps = 2

    def __init__(self, config: Any, model_path: str) -> None:
        self.max_model_len = 128
        self._running = 0

    async def start(self) -> None: ...

    def shutdown(self) -> None: ...

    async def check_health(self) -> None: ...

    def num_unfinished_requests(self) -> int:
        return self._running

    def tool_parser(self, name: str) -> Any:
        raise NotImplementedError

    def render_chat(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        return [1, 2, 3]

    def encode(self, text: str) -> list[int]:
        return [1] * max(1, len(text.split()))

    def decode(self, ids: list[int]) -> str:
        return "x" * len(ids)

    def check_token_ids(self, ids: list[int]) -> None: ...

    def sampling_params(self, sampling: Any, prompt_len: int, **kw: Any) -> Any:
        return sampling

    async def stream(self, prompt_ids: list[int], params: Any,
                     request_id: str) -> AsyncIterator[_RequestOutput]:
        self._running += 1
        try:
            for i in range(self.steps):
                yield _RequestOutput([_Output(0, f"tok{i} ", [i])])
            raise RuntimeError("engine core died: secret internal detail 0xdeadbeef")
        finally:
            self._running -= 1

    async def abort(self, request_id: str) -> None: ...


class SlowEngine(FailingEngine):
    """Holds each request for a while (to fill a replica and its queue), then ends."""

    async def stream(self, prompt_ids: list[int], params: Any,
                     request_id: str) -> AsyncIterator[_RequestOutput]:
        import asyncio

        self._running += 1
        try:
            for i in range(5):
                await asyncio.sleep(0.2)
                yield _RequestOutput([_Output(0, f"t{i}", [i], "length" if i == 4 else None)],
                                     finished=i == 4)
        finally:
            self._running -= 1
