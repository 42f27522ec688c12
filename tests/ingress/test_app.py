"""The app's wrapper around every handler: failures become OpenAI errors without internals, every model answer is counted by model, task and status (and API key), a client that leaves stops the replica's work on every path, and the lifespan runs the catalog refresh."""

import asyncio
import json
from typing import Any

import anyio
import pytest
from ray.serve.exceptions import BackPressureError

from deployments.contract import ErrorInfo
from ingress.auth import digest, key_id
from tests.ingress.fakes import (
    API,
    FakeApplication,
    RecordingInstrument,
    Stack,
    app_details,
    embeddings_app,
    error_of,
    image_app,
    llm_app,
    make_stack,
    recording_metrics,
    standard_stack,
)
from tests.waits import until

pytestmark = pytest.mark.anyio

CHAT = {"model": "org/llm", "messages": [{"role": "user", "content": "hi"}]}


def _tags(model: str, deploy_id: str, task: str, status: int) -> tuple[float, dict[str, str]]:
    return (1, {"model": model, "deploy_id": deploy_id, "task": task, "status": str(status)})


async def test_every_model_answer_is_counted_with_model_task_and_status():
    metrics, requests, _ = recording_metrics()
    stack = standard_stack(metrics=metrics)
    async with stack.client() as client:
        assert (await client.post(f"{API}/chat/completions", json=CHAT)).status_code == 200
        assert (
            await client.post(f"{API}/chat/completions", json={**CHAT, "stream": True})
        ).status_code == 200
        assert (
            await client.post(f"{API}/completions", json={"model": "nope", "prompt": "x"})
        ).status_code == 404
        assert (
            await client.post(f"{API}/chat/completions", json={"model": "org/llm"})
        ).status_code == 400
        assert (
            await client.post(f"{API}/embeddings", json={"model": "org/emb", "input": "x"})
        ).status_code == 200
        assert (
            await client.post(f"{API}/images/generations", json={"prompt": "a cat"})
        ).status_code == 200
        assert (await client.get(f"{API}/models")).status_code == 200  # not a model call
        assert (await client.get("/health")).status_code == 200
    assert requests.records == [
        _tags("org/llm", "llm-1", "chat", 200),
        _tags("org/llm", "llm-1", "chat", 200),
        _tags("", "", "completion", 404),
        _tags("", "", "chat", 400),
        _tags("org/emb", "emb-1", "embeddings", 200),
        _tags("org/img", "img-1", "image", 200),
    ]


async def test_replica_error_after_resolution_is_counted_with_its_model():
    metrics, requests, _ = recording_metrics()
    info = ErrorInfo("prompt too long", kind="context_length")
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(unary={"complete": lambda _: info})},
        metrics=metrics,
    )
    async with stack.client() as client:
        response = await client.post(f"{API}/chat/completions", json=CHAT)
    assert error_of(response, 400)["code"] == "context_length_exceeded"
    assert requests.records == [_tags("org/llm", "llm-1", "chat", 400)]


async def test_unexpected_failure_is_a_500_naming_only_the_request_id():
    secret = "Traceback: /srv/models/llama/weights.safetensors"
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(unary={"complete": lambda _: ValueError(secret)})},
    )
    async with stack.client({"x-request-id": "req-42"}) as client:
        response = await client.post(f"{API}/chat/completions", json=CHAT)
    error = error_of(response, 500)
    assert error == {
        "message": "Internal server error (request id req-42).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert "safetensors" not in response.text and "ValueError" not in response.text
    assert stack.inflight("llm-1") == 0


async def test_full_replica_queue_is_429():
    full = BackPressureError(num_queued_requests=10, max_queued_requests=10)
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(unary={"complete": lambda _: full})},
    )
    async with stack.client() as client:
        response = await client.post(f"{API}/chat/completions", json=CHAT)
    assert error_of(response, 429)["code"] == "rate_limited"
    assert response.headers["retry-after"] == "1"


async def test_no_replica_in_time_is_503_with_retry_after():
    stack = make_stack(
        {"llm-1": app_details("org/llm", wait_timeout_s=0.2, status="DEPLOYING", running=0)},
        {"llm-1": llm_app(assigned=False)},
    )
    async with stack.client() as client:
        response = await client.post(f"{API}/chat/completions", json=CHAT)
    assert error_of(response, 503)["code"] == "model_not_ready"
    assert int(response.headers["retry-after"]) >= 1
    assert stack.serve.apps["llm-1"].last.cancelled


async def test_lifespan_runs_the_refresh_loop_and_stops_it():
    stack = standard_stack(config={"catalog_refresh_s": 0.01})
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(
        stack.app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    with anyio.fail_after(2):
        assert (await from_app.get())["type"] == "lifespan.startup.complete"
    await until(lambda: stack.controller.fetches >= 3, "three passes of the refresh loop")
    assert stack.catalog.resolve("org/llm") is not None
    await to_app.put({"type": "lifespan.shutdown"})
    with anyio.fail_after(2):
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task
    fetches = stack.controller.fetches
    await asyncio.sleep(0.05)
    assert stack.controller.fetches == fetches  # the loop is gone


# --- a client that leaves ------------------------------------------------------------------


def _silent_stack() -> Stack:
    """Every model holds its answer (unary) or its first item (streams) until cancelled."""
    details = {
        "llm-1": app_details("org/llm", "1", ("chat", "completion")),
        "emb-1": app_details("org/emb", "1", ("embeddings",)),
        "img-1": app_details("org/img", "1", ("image",)),
    }
    llm = llm_app(answers=False)
    llm.streams["generate"] = lambda _: []
    llm.then_hang = True  # a long prefill: no first token yet
    apps = {
        "llm-1": llm,
        "emb-1": embeddings_app(answers=False),
        "img-1": image_app(answers=False),
    }
    return make_stack(details, apps)


LEAVING = [
    ("/chat/completions", {**CHAT}, "llm-1"),
    ("/chat/completions", {**CHAT, "stream": True}, "llm-1"),
    ("/completions", {"model": "org/llm", "prompt": "x"}, "llm-1"),
    ("/completions", {"model": "org/llm", "prompt": "x", "stream": True}, "llm-1"),
    ("/embeddings", {"model": "org/emb", "input": ["a", "b"]}, "emb-1"),
    ("/images/generations", {"model": "org/img", "prompt": "a cat"}, "img-1"),
]


@pytest.mark.parametrize(
    "path, body, deploy_id",
    LEAVING,
    ids=[f"{p}{'-stream' if b.get('stream') else ''}" for p, b, _ in LEAVING],
)
async def test_client_leaving_before_the_answer_cancels_the_replica_call(path, body, deploy_id):
    """Serve's proxy notices the disconnect and cancels the ingress replica's request
    task; here that task is the app's ASGI call, cancelled while the model works."""
    stack = _silent_stack()
    data = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": data, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}{path}",
        "raw_path": f"{API}{path}".encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("ingress", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ],
    }
    task = asyncio.ensure_future(stack.app(scope, receive, send))
    app = stack.serve.apps[deploy_id]
    await until(lambda: app.calls, "the call to reach the model")
    await asyncio.sleep(0.01)  # the call is now waiting on the model
    assert stack.inflight(deploy_id) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.last.cancelled
    assert stack.inflight(deploy_id) == 0
    assert sent == []  # nothing was answered to nobody


# --- per-key counts ------------------------------------------------------------------------


def _keyed(
    monkeypatch: pytest.MonkeyPatch, **auth: Any
) -> tuple[Stack, RecordingInstrument, RecordingInstrument]:
    monkeypatch.setenv("TEST_KEYS", "key-1,key-2")
    metrics = recording_metrics()[0]
    key_requests, key_tokens = RecordingInstrument(), RecordingInstrument()
    metrics.key_requests, metrics.key_tokens = key_requests, key_tokens
    stack = standard_stack(
        config={"auth": {"enabled": True, "api_keys_env": "TEST_KEYS", **auth}}, metrics=metrics
    )
    return stack, key_requests, key_tokens


async def test_requests_and_tokens_are_counted_by_key_id(monkeypatch):
    stack, key_requests, key_tokens = _keyed(monkeypatch)
    one, two = key_id(digest("key-1")), key_id(digest("key-2"))
    async with stack.client({"authorization": "Bearer key-1"}) as client:
        assert (await client.post(f"{API}/chat/completions", json=CHAT)).status_code == 200
        streamed = await client.post(f"{API}/chat/completions", json={**CHAT, "stream": True})
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert (
            await client.post(f"{API}/completions", json={"model": "x", "prompt": "p"})
        ).status_code == 404
    async with stack.client({"authorization": "Bearer key-2"}) as client:
        assert (
            await client.post(f"{API}/embeddings", json={"model": "org/emb", "input": "x"})
        ).status_code == 200

    def tags(model: str, deploy_id: str, task: str, status: int, key: str) -> dict[str, str]:
        return {
            "model": model,
            "deploy_id": deploy_id,
            "task": task,
            "status": str(status),
            "key": key,
        }

    assert key_requests.records == [
        (1, tags("org/llm", "llm-1", "chat", 200, one)),
        (1, tags("org/llm", "llm-1", "chat", 200, one)),
        (1, tags("", "", "completion", 404, one)),
        (1, tags("org/emb", "emb-1", "embeddings", 200, two)),
    ]
    llm = {"model": "org/llm", "deploy_id": "llm-1"}
    # unary: 5 prompt + 5 generated ("Hello"); streamed: the last chunk's counts, the same.
    assert key_tokens.records == [
        (10, {**llm, "key": one}),
        (10, {**llm, "key": one}),
        (3, {"model": "org/emb", "deploy_id": "emb-1", "key": two}),
    ]
    for _, labels in key_requests.records + key_tokens.records:
        assert "key-1" not in labels.values() and "key-2" not in labels.values()


async def test_no_key_counts_when_auth_is_off():
    metrics = recording_metrics()[0]
    metrics.key_requests = metrics.key_tokens = RecordingInstrument()
    stack = standard_stack(metrics=metrics)
    async with stack.client() as client:
        assert (await client.post(f"{API}/chat/completions", json=CHAT)).status_code == 200
    assert metrics.key_requests.records == []


async def test_per_key_limit_through_the_app(monkeypatch):
    stack, key_requests, _ = _keyed(monkeypatch, max_concurrent_requests_per_key=1)
    llm = stack.serve.apps["llm-1"]
    llm.answers = False
    async with stack.client({"authorization": "Bearer key-1"}) as first:
        held = asyncio.ensure_future(first.post(f"{API}/chat/completions", json=CHAT))
        await until(lambda: llm.calls, "key-1's first call to reach the model")
        refused = await first.post(f"{API}/chat/completions", json=CHAT)
        async with stack.client({"authorization": "Bearer key-2"}) as second:
            other = asyncio.ensure_future(second.post(f"{API}/chat/completions", json=CHAT))
            await until(lambda: len(llm.calls) >= 2, "key-2's call to reach the model")
            for call in llm.calls:
                call.response.answer()
            assert (await held).status_code == 200 and (await other).status_code == 200
    error = error_of(refused, 429)
    assert error["code"] == "rate_limited" and refused.headers["retry-after"] == "1"
    assert [r[1]["status"] for r in key_requests.records].count("429") == 1
    assert stack.forwarder.key_limiter.inflight(key_id(digest("key-1"))) == 0
