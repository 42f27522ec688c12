"""ChannelStream (one request's items: the channel's, then the Serve call's last one)
and the forwarder's channel path, with real sockets and a fake Serve application
whose `generate_to` sends through the model replica's real ChannelSenders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from deployments.contract import ChoiceDelta, ErrorInfo, GenerationChunk, StreamEnd
from deployments.stream_channel import ChannelSenders, ChannelTarget
from ingress import channel as channel_mod
from ingress.channel import ChannelStream, ChannelUnavailable, StreamChannel, channel_enabled
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from tests.ingress.fakes import CHAT_PAYLOAD, FakeStream, app_details, chunks, make_stack

pytestmark = pytest.mark.anyio


def _chunk(text: str, finished: bool = False) -> GenerationChunk:
    return GenerationChunk([ChoiceDelta(0, text)], 2, 1, finished=finished)


class _Response:
    """A unary DeploymentResponse whose end the test sets; like Ray 2.60, it is never
    reported assigned before it ends."""

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    async def _fetch_future_result_async(self) -> None:
        await asyncio.shield(self.future)

    def cancel(self) -> None:
        self.cancelled = True
        if not self.future.done():
            self.future.cancel()

    def __await__(self) -> Any:
        return self.future.__await__()


async def _stream() -> tuple[StreamChannel, ChannelStream, asyncio.Queue[Any], _Response]:
    channel = StreamChannel("127.0.0.1")
    target, queue = await channel.open()
    response = _Response()
    return channel, ChannelStream(channel, target.key, queue, response), queue, response


async def _drain(stream: ChannelStream) -> list[Any]:
    return [item async for item in stream]


async def test_items_then_the_last_in_order_even_when_the_end_comes_first():
    channel, stream, queue, response = await _stream()
    last = _chunk("!", finished=True)
    response.future.set_result(StreamEnd(2, last))  # the answer overtakes the items
    await asyncio.sleep(0)
    queue.put_nowait(_chunk("a"))
    queue.put_nowait(_chunk("b"))
    items = await _drain(stream)
    assert [i.deltas[0].text for i in items] == ["a", "b", "!"] and items[-1] is last
    assert channel.open_streams == 0
    channel.close()


async def test_an_error_after_output_is_the_last_item():
    channel, stream, queue, response = await _stream()
    queue.put_nowait(_chunk("a"))
    info = ErrorInfo("engine failed", kind="internal")
    response.future.set_result(StreamEnd(1, info))
    items = await _drain(stream)
    assert len(items) == 2 and items[0].deltas[0].text == "a" and items[1] is info
    channel.close()


async def test_a_failed_call_raises_and_an_unreachable_channel_says_so():
    channel, stream, _, response = await _stream()
    response.future.set_exception(RuntimeError("replica died"))
    with pytest.raises(RuntimeError, match="replica died"):
        await stream.__anext__()
    channel2, stream2, _, response2 = await _stream()
    response2.future.set_result(StreamEnd(0, None))
    with pytest.raises(ChannelUnavailable):
        await stream2.__anext__()
    assert channel.open_streams == channel2.open_streams == 0
    channel.close()
    channel2.close()


async def test_items_that_never_arrive_cut_the_stream(monkeypatch):
    monkeypatch.setattr(channel_mod, "_LATE_ITEMS_S", 0.05)
    channel, stream, _, response = await _stream()
    response.future.set_result(StreamEnd(3, _chunk("", finished=True)))
    with pytest.raises(ConnectionError, match="0 of 3"):
        await stream.__anext__()
    channel.close()


async def test_cancel_cancels_the_call_and_forgets_the_key():
    channel, stream, _, response = await _stream()
    assert channel.open_streams == 1
    stream.cancel()
    stream.cancel()  # idempotent
    assert response.cancelled and channel.open_streams == 0
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    channel.close()


def test_the_environment_switch_turns_the_channel_off(monkeypatch):
    assert channel_enabled(True) and not channel_enabled(False)
    monkeypatch.setenv("OPENAI_SERVE_STREAM_CHANNEL", "0")
    assert not channel_enabled(True)


# --- the forwarder's channel path ---------------------------------------------------


class _ChannelApp:
    """A Serve application whose `generate_to` runs `produce(target)` as the model
    replica would: items through real ChannelSenders, StreamEnd as the answer; its
    streaming `generate` (the fallback) yields `chunks()`."""

    def __init__(self, produce: Callable[[ChannelSenders, ChannelTarget], Any]) -> None:
        self.produce = produce
        self.senders = ChannelSenders()
        self.calls: list[tuple[str, bool]] = []
        self.responses: list[_Response] = []

    def options(self, *, stream: bool) -> Any:
        app = self

        class _Handle:
            def __getattr__(self, name: str) -> Any:
                class _Method:
                    def remote(self, payload: Any, *args: Any) -> Any:
                        app.calls.append((name, stream))
                        if name == "generate_to":
                            return app._run(args[0])
                        return FakeStream(chunks("fallback"))

                return _Method()

        return _Handle()

    def _run(self, target: ChannelTarget) -> _Response:
        response = _Response()

        async def go() -> None:
            try:
                response.future.set_result(await self.produce(self.senders, target))
            except Exception as exc:
                response.future.set_exception(exc)

        task = asyncio.ensure_future(go())
        response.future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        self.responses.append(response)
        return response


async def _sends(texts: list[str]) -> Callable[[ChannelSenders, ChannelTarget], Any]:
    async def produce(senders: ChannelSenders, target: ChannelTarget) -> StreamEnd:
        conn = await senders.get(target)
        for text in texts:
            conn.send(target.key, _chunk(text))
            await asyncio.sleep(0)
        conn.flush()
        return StreamEnd(len(texts), _chunk("", finished=True))

    return produce


def _channel_stack(app: _ChannelApp) -> Any:
    stack = make_stack({"llm-1": app_details("m")}, {"llm-1": app})  # type: ignore[dict-item]
    stack.forwarder.channel = StreamChannel("127.0.0.1")
    return stack


async def _open(stack: Any) -> Any:
    ctx = RequestContext("R", "chat")
    entry = await stack.forwarder.resolve(ctx, "m")
    return await stack.forwarder.open_stream(ctx, entry, "generate", CHAT_PAYLOAD)


async def test_a_stream_goes_over_the_channel_when_serve_never_says_assigned():
    app = _ChannelApp(await _sends(["Hel", "lo"]))
    stack = _channel_stack(app)
    stream = await _open(stack)
    items = [stream.first] + [item async for item in stream.rest]
    assert [i.deltas[0].text for i in items] == ["Hel", "lo", ""] and items[-1].finished
    assert app.calls == [("generate_to", False)]
    stream.finished = True
    stream.close()
    assert stack.inflight("llm-1") == 0 and stack.forwarder.channel.open_streams == 0
    app.senders.close()
    stack.forwarder.channel.close()


async def test_an_error_before_output_is_a_status():
    async def produce(senders: ChannelSenders, target: ChannelTarget) -> StreamEnd:
        return StreamEnd(0, ErrorInfo("too long", kind="context_length", param="messages"))

    stack = _channel_stack(_ChannelApp(produce))
    with pytest.raises(OpenAIError) as caught:
        await _open(stack)
    assert caught.value.status == 400 and caught.value.code == "context_length_exceeded"
    assert stack.inflight("llm-1") == 0
    stack.forwarder.channel.close()


async def test_an_unreachable_channel_falls_back_to_serve_streaming_for_a_while():
    async def produce(senders: ChannelSenders, target: ChannelTarget) -> StreamEnd:
        return StreamEnd(0, None)

    app = _ChannelApp(produce)
    stack = _channel_stack(app)
    for _ in range(2):
        stream = await _open(stack)
        assert stream.first.deltas[0].text == "f"  # chunks("fallback"): one letter each
        stream.close()
    # The first request tried the channel; the second went to Serve streaming at once.
    assert app.calls == [("generate_to", False), ("generate", True), ("generate", True)]
    assert stack.inflight("llm-1") == 0
    stack.forwarder.channel.close()


async def test_a_client_that_leaves_before_the_first_item_cancels_the_call():
    async def produce(senders: ChannelSenders, target: ChannelTarget) -> StreamEnd:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    app = _ChannelApp(produce)
    stack = _channel_stack(app)
    task = asyncio.ensure_future(_open(stack))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.responses[0].cancelled
    assert stack.inflight("llm-1") == 0 and stack.forwarder.channel.open_streams == 0
    stack.forwarder.channel.close()
