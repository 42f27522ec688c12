"""SSE framing (usage on the finish chunk and the include_usage chunk), and how a stream ends: one [DONE], in-band errors, the slot released however the response ends."""

import asyncio
import json
from typing import Any

import anyio
import pytest

from deployments.contract import ChoiceDelta, ErrorInfo, GenerateRequest, GenerationChunk
from ingress.forward import ForwardedStream, RequestContext
from ingress.streaming import DONE_FRAME, ChunkFramer, SSEResponse, sse_stream
from ingress.wire.chat import ChatDelta
from tests.ingress.fakes import API, FakeApplication, FakeStream, Stack, app_details, make_stack


def _events(text: str) -> list[dict]:
    assert text.endswith("\n\n")
    return [json.loads(f[len("data: ") :]) for f in text.split("\n\n") if f]


def test_chat_frames_role_text_then_finish_with_usage():
    f = ChunkFramer("chat", "chatcmpl-1", 5, "m", include_usage=False)
    first = _events(f.frames(GenerationChunk([ChoiceDelta(0, "Hel")], 7, 1)))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hel"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert "usage" not in first[1]
    last = _events(f.frames(GenerationChunk([ChoiceDelta(0, "lo", "stop")], 7, 2, True)))
    assert [e["choices"][0]["delta"] for e in last] == [{"content": "lo"}, {}]
    assert last[1]["choices"][0]["finish_reason"] == "stop"
    assert last[1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert all(
        e["object"] == "chat.completion.chunk" and e["id"] == "chatcmpl-1" for e in first + last
    )
    assert f.closing_frames() == DONE_FRAME


def test_include_usage_puts_usage_on_one_choiceless_chunk_before_done():
    f = ChunkFramer("completion", "cmpl-1", 5, "m", include_usage=True)
    finish = _events(f.frames(GenerationChunk([ChoiceDelta(0, "x", "length")], 4, 3, True)))
    # OpenAI's way: the finish chunk has no usage, so a client that adds up every
    # chunk's usage (LangChain) counts it once.
    assert all("usage" not in e for e in finish)
    closing = f.closing_frames()
    assert closing.endswith(DONE_FRAME)
    usage_event = _events(closing[: -len(DONE_FRAME)])[0]
    assert usage_event["choices"] == [] and usage_event["object"] == "text_completion"
    assert usage_event["usage"]["total_tokens"] == 7


def test_n_choices_each_get_one_finish():
    f = ChunkFramer("completion", "cmpl-1", 5, "m", include_usage=False)
    out = _events(
        f.frames(
            GenerationChunk(
                [ChoiceDelta(0, "a", "length"), ChoiceDelta(1, "b", "length")], 2, 2, True
            )
        )
    )
    finishes = [
        (e["choices"][0]["index"], e["choices"][0]["finish_reason"])
        for e in out
        if e["choices"][0]["finish_reason"]
    ]
    assert finishes == [(0, "length"), (1, "length")]


# --- sse_stream and SSEResponse, on a stream opened by the real Forwarder -------------

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "path": "/",
    "headers": [],
}


def _unfinished(text: str = "Hel") -> GenerationChunk:
    return GenerationChunk(
        deltas=[ChoiceDelta(index=0, text=text)], prompt_tokens=3, completion_tokens=1
    )


def _finished(text: str = "lo") -> GenerationChunk:
    return GenerationChunk(
        deltas=[ChoiceDelta(index=0, text=text, finish_reason="stop")],
        prompt_tokens=3,
        completion_tokens=2,
        finished=True,
    )


def _stack(items: list[Any], then_hang: bool = False) -> Stack:
    app = FakeApplication(streams={"generate": lambda _: list(items)}, then_hang=then_hang)
    return make_stack({"llm-1": app_details("m")}, {"llm-1": app})


async def _open(stack: Stack) -> ForwardedStream:
    ctx = RequestContext("R", "chat")
    entry = await stack.forwarder.resolve(ctx, "m")
    payload = GenerateRequest(
        request_id="R-1", task="chat", messages=[{"role": "user", "content": "hi"}]
    )
    return await stack.forwarder.open_stream(ctx, entry, "generate", payload)


def _response(stream: ForwardedStream) -> SSEResponse:
    return SSEResponse(
        sse_stream(ChunkFramer("chat", "chatcmpl-1", 0, "m", False), stream, "R-1"), stream
    )


async def _play(response: SSEResponse) -> tuple[int, list[str]]:
    """Runs the response against a client that never leaves; returns status and data."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(2):
        await response(SCOPE, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    return sent[0]["status"], _data(body)


def _data(body: str) -> list[str]:
    assert body.endswith("\n\n")
    frames = [f for f in body.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: ") :] for f in frames]


@pytest.mark.anyio
async def test_stream_read_to_the_end_has_one_done_and_releases():
    stack = _stack([_unfinished(), _finished()])
    stream = await _open(stack)
    assert stack.inflight("llm-1") == 1
    status, data = await _play(_response(stream))
    assert status == 200
    assert data.count("[DONE]") == 1 and data[-1] == "[DONE]"
    texts = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1]]
    assert "".join(t for t in texts if t) == "Hello"
    assert stack.inflight("llm-1") == 0
    assert not stack.serve.apps["llm-1"].last.cancelled  # ended by the replica


@pytest.mark.anyio
async def test_finished_first_chunk_is_the_whole_stream():
    stack = _stack([_finished("Hi")])
    status, data = await _play(_response(await _open(stack)))
    assert status == 200 and data.count("[DONE]") == 1 and data[-1] == "[DONE]"
    assert stack.inflight("llm-1") == 0


@pytest.mark.anyio
async def test_error_info_mid_stream_is_one_in_band_error_then_done():
    stack = _stack([_unfinished(), ErrorInfo("The engine stopped; retry.", kind="unavailable")])
    status, data = await _play(_response(await _open(stack)))
    assert status == 200  # already sent with the first chunk
    errors = [json.loads(d) for d in data[:-1] if "error" in json.loads(d)]
    assert len(errors) == 1 and json.loads(data[-2]) == errors[0]
    assert errors[0]["error"] == {
        "message": "The engine stopped; retry.",
        "type": "service_unavailable_error",
        "param": None,
        "code": "model_unavailable",
    }
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    assert stack.inflight("llm-1") == 0


@pytest.mark.anyio
async def test_replica_exception_mid_stream_is_an_in_band_500_without_internals():
    secret = "CUDA error at 0x7f3a: /opt/engine/secret.py line 12"
    stack = _stack([_unfinished(), RuntimeError(secret)])
    status, data = await _play(_response(await _open(stack)))
    assert status == 200
    error = json.loads(data[-2])["error"]
    assert error == {
        "message": "Internal server error (request id R-1).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert all(secret not in d and "RuntimeError" not in d for d in data)
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    assert stack.inflight("llm-1") == 0


@pytest.mark.anyio
async def test_ingress_failure_mid_stream_stops_the_replica():
    # An item the ingress cannot frame (a bug on our side, not the replica's): the
    # client gets the in-band 500, and the replica, which is still generating, must be
    # cancelled rather than left to run to max_tokens for nobody.
    stack = _stack([_unfinished(), {"not": "a GenerationChunk"}], then_hang=True)
    status, data = await _play(_response(await _open(stack)))
    assert status == 200
    assert json.loads(data[-2])["error"]["type"] == "server_error"
    assert data[-1] == "[DONE]"
    assert stack.inflight("llm-1") == 0
    assert stack.serve.apps["llm-1"].last.cancelled


@pytest.mark.anyio
async def test_client_disconnect_cancels_the_replica_stream_and_releases():
    """Starlette-test style: a hand-written `receive` says http.disconnect once the first
    body chunk is out, while the replica is still generating."""
    stack = _stack([_unfinished("Hel")], then_hang=True)
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    first_chunk_out = asyncio.Event()
    request_read = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first_chunk_out.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk_out.set()

    path = f"{API}/chat/completions"
    scope = {
        **SCOPE,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("ingress", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    with anyio.fail_after(2):
        await stack.app(scope, receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    streamed = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert '"content":"Hel"' in streamed and "[DONE]" not in streamed
    fake: FakeStream = stack.serve.apps["llm-1"].last
    assert fake.cancelled
    assert stack.inflight("llm-1") == 0


@pytest.mark.anyio
async def test_response_cancelled_before_its_body_was_iterated_still_releases():
    stack = _stack([_unfinished()], then_hang=True)
    response = _response(await _open(stack))
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()  # a client that reads nothing

    task = asyncio.ensure_future(response(SCOPE, receive, send))
    with anyio.fail_after(2):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake: FakeStream = stack.serve.apps["llm-1"].last
    assert fake.yielded == 1  # only the peeked first item: the body never ran
    assert fake.cancelled
    assert stack.inflight("llm-1") == 0


@pytest.mark.anyio
async def test_forwarded_stream_close_is_idempotent():
    stack = _stack([_unfinished()], then_hang=True)
    stream = await _open(stack)
    stream.close()
    stream.close()
    assert stack.inflight("llm-1") == 0
    assert stack.forwarder.limiter.inflight("llm-1") == 0
    assert stack.serve.apps["llm-1"].last.cancelled


@pytest.mark.parametrize("task", ["chat", "completion"])
@pytest.mark.parametrize(
    "text",
    ["plain", 'quote " and \\ backslash', "line\nbreak\ttab\x01", "ünïcödé 日本 🙂", "\u2028"],
)
def test_text_frames_equal_the_pydantic_rendering(task, text):
    """The per-token fast path (a template filled by joins) renders the same JSON as
    the wire model, byte for byte where pydantic's escapes agree, and always as data."""
    fast = ChunkFramer(task, "id-1", 7, "m/x", False)
    slow = ChunkFramer(task, "id-1", 7, "m/x", False)
    got = fast._text_frame(2, text)
    want = (
        slow._chat(2, ChatDelta(content=text), logprobs=None)
        if task == "chat"
        else slow._text(2, text, logprobs=None)
    )
    assert json.loads(got[len("data: ") :]) == json.loads(want[len("data: ") :])
    assert got.endswith("\n\n") and got.startswith("data: {")
    if text.isascii() and text.isprintable():
        assert got == want


def test_a_placeholder_in_the_model_name_falls_back_to_pydantic():
    framer = ChunkFramer("chat", "id", 1, "@@openai-serve-text-slot@@", False)
    frame = framer._text_frame(0, "hi")
    body = json.loads(frame[len("data: ") :])
    assert body["choices"][0]["delta"] == {"content": "hi"}
    assert body["model"] == "@@openai-serve-text-slot@@"
