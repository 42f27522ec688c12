"""OpenAI stream framing: engine chunks → SSE frames (`data: {json}\\n\\n`).

Usage, one of two ways:
  * OpenAI's, when the client sets `stream_options.include_usage`: one more chunk
    with `choices: []` and the total usage, just before `data: [DONE]`, and usage on
    no other chunk (clients that add up every chunk's usage, such as LangChain,
    would count it twice).
  * DeepInfra's, otherwise: the chunk that carries a choice's `finish_reason` also
    carries `usage` (the counts so far; the last one holds the totals), without the
    client asking. Its reference snippets read usage exactly there.
A choice's last text and its finish_reason travel in two chunks, as OpenAI sends
them, so a client that prints text only on non-final chunks loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from deployments.contract import ErrorInfo, GenerationChunk
from ingress.convert import chat_logprobs, completion_logprobs, tool_call_deltas
from ingress.errors import OpenAIError, from_info, serve_error
from ingress.forward import ForwardedStream
from ingress.wire.chat import ChatChunkChoice, ChatCompletionChunk, ChatDelta
from ingress.wire.common import Usage
from ingress.wire.completions import Completion, CompletionChoice

DONE_FRAME = "data: [DONE]\n\n"
# Stands for a delta's text in a frame rendered once per (stream, choice); see
# ChunkFramer._text_frame.
_TEXT_SLOT = "@@openai-serve-text-slot@@"


def _frame(model_json: str) -> str:
    return f"data: {model_json}\n\n"


def _usage(chunk: GenerationChunk) -> Usage:
    return Usage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )


class ChunkFramer:
    """Pure and stateful per stream: one GenerationChunk in, SSE text out."""

    def __init__(
        self,
        task: Literal["chat", "completion"],
        response_id: str,
        created: int,
        model: str,
        include_usage: bool,
    ) -> None:
        self.task = task
        self.id = response_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self._role_sent: set[int] = set()
        self._text_offset: dict[int, int] = {}  # completions logprobs' text_offset
        self._last: GenerationChunk | None = None
        # choice index → the text frame split around its text (None: not splittable)
        self._templates: dict[int, tuple[str, str] | None] = {}

    def _chat(
        self,
        index: int,
        delta: ChatDelta,
        finish: str | None = None,
        usage: Usage | None = None,
        logprobs: Any = None,
    ) -> str:
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)
        # `object` is passed so exclude_unset keeps it while dropping unset nulls.
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=[choice],
        )
        if usage is not None:
            chunk.usage = usage
        return _frame(chunk.model_dump_json(exclude_unset=True))

    def _text(
        self,
        index: int,
        text: str,
        finish: str | None = None,
        usage: Usage | None = None,
        logprobs: Any = None,
    ) -> str:
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        chunk = Completion(
            id=self.id,
            object="text_completion",
            created=self.created,
            model=self.model,
            choices=[choice],
        )
        if usage is not None:
            chunk.usage = usage
        return _frame(chunk.model_dump_json(exclude_unset=True))

    def _text_frame(self, index: int, text: str) -> str:
        """The frame of a text-only delta (no logprobs): the most frequent frame by
        far, one per engine step per choice. Rendered through pydantic once per
        choice, with a placeholder for the text, then filled by string joins: the
        same JSON without a pydantic model per token."""
        if index not in self._templates:
            if self.task == "chat":
                frame = self._chat(index, ChatDelta(content=_TEXT_SLOT), logprobs=None)
            else:
                frame = self._text(index, _TEXT_SLOT, logprobs=None)
            parts = frame.split(json.dumps(_TEXT_SLOT))
            self._templates[index] = (parts[0], parts[1]) if len(parts) == 2 else None
        template = self._templates[index]
        if template is None:  # the placeholder also appeared in the id or model
            if self.task == "chat":
                return self._chat(index, ChatDelta(content=text), logprobs=None)
            return self._text(index, text, logprobs=None)
        return template[0] + json.dumps(text, ensure_ascii=False) + template[1]

    def _unasked(self, chunk: GenerationChunk) -> Usage | None:
        """DeepInfra's usage on a finish chunk, unless OpenAI's final chunk was asked."""
        return None if self.include_usage else _usage(chunk)

    def frames(self, chunk: GenerationChunk) -> str:
        self._last = chunk
        out = []
        for d in chunk.deltas:
            if self.task == "chat":
                if d.index not in self._role_sent:
                    self._role_sent.add(d.index)
                    out.append(self._chat(d.index, ChatDelta(role="assistant", content="")))
                if d.text and d.logprobs is None:
                    out.append(self._text_frame(d.index, d.text))
                elif d.text:
                    out.append(
                        self._chat(
                            d.index, ChatDelta(content=d.text), logprobs=chat_logprobs(d.logprobs)
                        )
                    )
                if d.tool_calls:
                    out.append(
                        self._chat(d.index, ChatDelta(tool_calls=tool_call_deltas(d.tool_calls)))
                    )
                if d.finish_reason is not None:
                    out.append(
                        self._chat(d.index, ChatDelta(), d.finish_reason, self._unasked(chunk))
                    )
            else:
                if d.text:
                    offset = self._text_offset.get(d.index, 0)
                    self._text_offset[d.index] = offset + len(d.text)
                    if d.logprobs is None:
                        out.append(self._text_frame(d.index, d.text))
                    else:
                        out.append(
                            self._text(
                                d.index, d.text, logprobs=completion_logprobs(d.logprobs, offset)
                            )
                        )
                if d.finish_reason is not None:
                    out.append(self._text(d.index, "", d.finish_reason, self._unasked(chunk)))
        return "".join(out)

    def closing_frames(self) -> str:
        if not self.include_usage or self._last is None:
            return DONE_FRAME
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.task == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _usage(self._last).model_dump(),
        }
        return _frame(json.dumps(body)) + DONE_FRAME


async def relay(
    stream: ForwardedStream,
    frames: Callable[[GenerationChunk], str],
    closing: Callable[[], Awaitable[str]],
    failed: Callable[[OpenAIError], str],
    request_id: str,
) -> AsyncIterator[str]:
    """The body of a streaming response, whose status (200) is already decided: each
    chunk's `frames`, then `closing` once the engine is done.

    A failure after this point can only be reported in-band, as `failed` frames it.
    The stream is closed by the response (SSEResponse), however the body ends.
    Chat and completions frame with ChunkFramer (sse_stream); the Responses API with
    its typed events (ingress/responses.py).
    """
    first: GenerationChunk = stream.first
    last = first
    try:
        stream.timer.chunk()
        yield frames(first)
        if not first.finished:
            async for item in stream.rest:
                if isinstance(item, ErrorInfo):
                    stream.finished = True
                    yield failed(from_info(item))
                    return
                last = item
                text = frames(item)
                if text:
                    stream.timer.chunk()
                    yield text
        stream.finished = True
        stream.timer.finish(last.prompt_tokens, last.completion_tokens)
        yield await closing()
    except Exception as exc:  # the model replica died mid-stream, or a bug here
        # Not marked finished: closing the stream cancels the replica's generator, in
        # case the failure was ours and the replica is still generating.
        yield failed(serve_error(exc, request_id))


def sse_stream(framer: ChunkFramer, stream: ForwardedStream, request_id: str) -> AsyncIterator[str]:
    """Chat and completions: a failure is one `data: {error}` frame, and `data: [DONE]`
    always ends the stream, exactly once."""

    async def closing() -> str:
        return framer.closing_frames()

    return relay(stream, framer.frames, closing, lambda e: e.sse_event() + DONE_FRAME, request_id)


class SSEResponse(StreamingResponse):
    """A text/event-stream response that closes its ForwardedStream when the response
    ends, however it ends: read to the end, client gone, or cancelled by Starlette
    before the body was ever iterated (where a generator's `finally` never runs).

    `body`: the frames (sse_stream here; the Responses API's events elsewhere)."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[str], stream: ForwardedStream) -> None:
        super().__init__(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()
