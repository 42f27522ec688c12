"""The forwarding pipeline (resolve → admit → handle → wait → answer → release) against fake Serve handles: statuses, limits, cancellation, and the slot released on every path."""

import asyncio
from typing import Any

import pytest
from ray.serve.exceptions import BackPressureError

from deployments.contract import ErrorInfo, GenerateRequest, GenerationResult
from ingress import forward
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from tests.ingress.fakes import (
    FakeApplication,
    FakeResponse,
    FakeStream,
    Stack,
    app_details,
    chunks,
    llm_app,
    make_stack,
    recording_metrics,
)
from tests.waits import until

pytestmark = pytest.mark.anyio

PAYLOAD = GenerateRequest(
    request_id="R-1", task="chat", messages=[{"role": "user", "content": "hi"}]
)


def _stack(app: FakeApplication, **card: Any) -> Stack:
    status = card.pop("status", "RUNNING")
    return make_stack({"llm-1": app_details("m", status=status, **card)}, {"llm-1": app})


async def _call(stack: Stack, task: Any = "chat", model: str = "m") -> Any:
    ctx = RequestContext("R", task)
    entry = await stack.forwarder.resolve(ctx, model)
    return await stack.forwarder.call(ctx, entry, "complete", PAYLOAD)


async def _open(stack: Stack) -> Any:
    ctx = RequestContext("R", "chat")
    entry = await stack.forwarder.resolve(ctx, "m")
    return await stack.forwarder.open_stream(ctx, entry, "generate", PAYLOAD)


async def test_unary_call_returns_the_result_and_releases():
    stack = _stack(llm_app("ok"))
    result = await _call(stack)
    assert isinstance(result, GenerationResult) and result.choices[0].text == "ok"
    app = stack.serve.apps["llm-1"]
    assert [(c.method, c.payload, c.stream) for c in app.calls] == [("complete", PAYLOAD, False)]
    assert stack.inflight("llm-1") == 0


async def test_a_background_context_marks_the_payload_for_the_replica():
    stack = _stack(llm_app("ok"))
    ctx = RequestContext("R", "chat", background=True)
    entry = await stack.forwarder.resolve(ctx, "m")
    await stack.forwarder.call(ctx, entry, "complete", PAYLOAD)
    [call] = stack.serve.apps["llm-1"].calls
    assert call.payload.background is True and PAYLOAD.background is False
    assert call.payload.model_copy(update={"background": False}) == PAYLOAD


async def test_resolve_records_the_entry_on_the_context():
    stack = _stack(llm_app())
    ctx = RequestContext("R", "chat")
    entry = await stack.forwarder.resolve(ctx, "m")
    assert ctx.entry is entry and entry.deploy_id == "llm-1"


@pytest.mark.parametrize(
    "kind, status, error_type, code",
    [
        ("invalid_request", 400, "invalid_request_error", None),
        ("context_length", 400, "invalid_request_error", "context_length_exceeded"),
        ("not_found", 404, "not_found_error", "not_found"),
        ("unavailable", 503, "service_unavailable_error", "model_unavailable"),
        ("overloaded", 429, "rate_limit_error", "rate_limited"),
        ("internal", 500, "server_error", None),
    ],
)
async def test_error_info_becomes_the_status_of_its_kind(kind, status, error_type, code):
    info = ErrorInfo("what went wrong", kind=kind, param="messages")
    stack = _stack(FakeApplication(unary={"complete": lambda _: info}))
    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    err = caught.value
    assert (err.status, err.type, err.code, err.param) == (status, error_type, code, "messages")
    assert err.message == "what went wrong"
    assert stack.inflight("llm-1") == 0


async def test_error_info_code_wins_over_the_kind_default():
    info = ErrorInfo("too long", kind="context_length", code="custom_code")
    stack = _stack(FakeApplication(unary={"complete": lambda _: info}))
    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    assert caught.value.code == "custom_code"


async def test_429_at_the_cards_concurrency_limit_and_slots_come_back():
    metrics, _, rejected = recording_metrics()
    app = llm_app(answers=False)
    stack = make_stack(
        {"llm-1": app_details("m", max_concurrent_requests=2)}, {"llm-1": app}, metrics=metrics
    )
    held = [asyncio.ensure_future(_call(stack)) for _ in range(2)]
    await until(lambda: len(app.calls) >= 2, "both held calls to reach the model")
    assert stack.inflight("llm-1") == 2

    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    err = caught.value
    assert (err.status, err.code, err.type) == (429, "rate_limited", "rate_limit_error")
    assert err.headers() == {"Retry-After": "1"}
    assert len(app.calls) == 2  # refused before the handle hop
    assert rejected.records == [
        (1, {"model": "m", "deploy_id": "llm-1", "reason": "concurrency_limit"})
    ]

    for call in app.calls:
        call.response.answer()
    await asyncio.gather(*held)
    assert stack.inflight("llm-1") == 0
    app.answers = True
    for _ in range(3):  # each call gives its slot back: never a 429 one at a time
        await _call(stack)
    assert stack.inflight("llm-1") == 0


async def test_replica_exception_propagates_and_releases():
    stack = _stack(FakeApplication(unary={"complete": lambda _: ConnectionError("gone")}))
    with pytest.raises(ConnectionError):
        await _call(stack)
    assert stack.inflight("llm-1") == 0


async def test_stream_whose_first_item_is_an_error_raises_cancels_and_releases():
    info = ErrorInfo("prompt too long", kind="context_length", param="messages")
    app = FakeApplication(streams={"generate": lambda _: [info, *chunks("never")]})
    stack = _stack(app)
    with pytest.raises(OpenAIError) as caught:
        await _open(stack)
    assert (caught.value.status, caught.value.code) == (400, "context_length_exceeded")
    fake: FakeStream = app.last
    assert fake.cancelled and fake.yielded == 1
    assert stack.inflight("llm-1") == 0


async def test_stream_first_item_is_peeked_and_the_slot_held_until_close():
    app = FakeApplication(streams={"generate": lambda _: chunks("Hi")})
    stack = _stack(app)
    stream = await _open(stack)
    assert stream.first.deltas[0].text == "H"
    assert stack.inflight("llm-1") == 1
    assert [c.stream for c in app.calls] == [True] and app.options_calls == [True]
    stream.close()
    assert stack.inflight("llm-1") == 0


async def test_stream_that_ends_without_output_is_an_error_and_releases():
    app = FakeApplication(streams={"generate": lambda _: []})
    stack = _stack(app)
    with pytest.raises(RuntimeError):
        await _open(stack)
    assert app.last.cancelled
    assert stack.inflight("llm-1") == 0


async def test_cancelled_unary_call_cancels_the_replica_call_and_releases():
    app = llm_app(answers=False)
    stack = _stack(app)
    task = asyncio.ensure_future(_call(stack))
    await until(lambda: app.calls, "the call to reach the model")
    await asyncio.sleep(0.01)  # the call is now waiting for its answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake: FakeResponse = app.last
    assert fake.cancelled
    assert stack.inflight("llm-1") == 0


async def test_no_replica_within_wait_timeout_is_503_model_not_ready(monkeypatch):
    # What the wait asked Serve for: how long it waits is read from these, not from a
    # wall-clock upper bound (a loaded machine stretches a 0.3 s wait, never shortens it).
    asked: list[float] = []

    async def wait_assigned(response: Any, timeout_s: float) -> None:
        asked.append(timeout_s)
        await real_wait_assigned(response, timeout_s)

    real_wait_assigned = forward.wait_assigned
    monkeypatch.setattr(forward, "wait_assigned", wait_assigned)
    app = llm_app(assigned=False)
    stack = _stack(app, wait_timeout_s=0.3, status="DEPLOYING", running=0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    assert loop.time() - start >= 0.25  # it waited for the bound
    # ...and no longer: never one poll of _WAIT_POLL_S (2 s), never more than the bound
    # in all (each poll asks for what is left of it).
    assert asked and max(asked) <= 0.3 and sum(asked) < 0.3 + 0.05, asked
    err = caught.value
    assert (err.status, err.code, err.type) == (503, "model_not_ready", "service_unavailable_error")
    assert "Retry-After" in err.headers() and int(err.headers()["Retry-After"]) >= 1
    assert app.last.cancelled
    assert stack.inflight("llm-1") == 0


async def test_the_503_says_why_the_model_is_not_ready():
    """The catalog's reason (ingress/status.py) rides in the message; Serve's own text,
    which names hosts and ids, does not."""
    app = llm_app(assigned=False)
    stack = _stack(app, wait_timeout_s=0.2, status="DEPLOYING", running=0)
    model = stack.controller.apps["llm-1"]["deployments"]["Model"]
    model["replicas"] = [{"state": "STARTING", "pid": None, "start_time_s": 1.0}]
    model["message"] = (
        "Deployment 'LLM:m-1' in application 'llm-1' has 1 replicas that have taken more "
        "than 30s to be scheduled. Resources required for each replica: "
        '{"CPU": 1.0, "node:10.0.0.7": 0.001}, total resources available: {"CPU": 0.0}. '
        "Use `ray status` for more details."
    )
    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    assert caught.value.code == "model_not_ready"
    assert "(waiting for resources: needs CPU 1, cluster has 0 free)" in caught.value.message
    assert "10.0.0.7" not in caught.value.message and "llm-1'" not in caught.value.message


async def test_no_replica_for_a_stream_is_503_and_cancels():
    app = FakeApplication(streams={"generate": lambda _: chunks()}, assigned=False)
    stack = _stack(app, wait_timeout_s=0.3)
    with pytest.raises(OpenAIError) as caught:
        await _open(stack)
    assert caught.value.code == "model_not_ready"
    assert app.last.cancelled and app.last.yielded == 0
    assert stack.inflight("llm-1") == 0


async def test_application_failing_while_a_call_waits_ends_the_wait(monkeypatch):
    monkeypatch.setattr(forward, "_WAIT_POLL_S", 0.02)
    app = llm_app(assigned=False)
    stack = _stack(app, wait_timeout_s=300, status="DEPLOYING", running=0)
    task = asyncio.ensure_future(_call(stack))
    await until(lambda: app.calls, "the call to reach Serve's queue")
    stack.controller.apps["llm-1"] = app_details(
        "m",
        status="DEPLOY_FAILED",
        running=0,
        message="replica crashed at start",
        wait_timeout_s=300,
    )
    await stack.catalog.refresh()
    with pytest.raises(OpenAIError) as caught:
        # Ends with the failure, well before the wait's own bound (polls every 0.02 s;
        # a tenth of the bound leaves a loaded machine room).
        await asyncio.wait_for(task, 30)
    assert (caught.value.status, caught.value.code) == (503, "model_unavailable")
    assert app.last.cancelled
    assert stack.inflight("llm-1") == 0


SERVE_TRACEBACK = (
    'Traceback (most recent call last):\n  File "/work/main/deployments/x.py", line 3, '
    "in f\nFileNotFoundError: /no/such/model (pid=4242, ip=10.1.2.3)"
)


@pytest.mark.parametrize(
    "status, running, words",
    [("DEPLOY_FAILED", 0, "deploy failed"), ("UNHEALTHY", 0, "no healthy replica")],
)
async def test_failed_application_is_503_model_unavailable(status, running, words):
    app = llm_app()
    stack = _stack(app, status=status, running=running, message=SERVE_TRACEBACK)
    with pytest.raises(OpenAIError) as caught:
        await _call(stack)
    err = caught.value
    assert (err.status, err.code) == (503, "model_unavailable")
    assert err.headers()["Retry-After"] == "30"
    assert words in err.message and "request id" in err.message
    # Serve's status text (traceback, paths, pids, addresses) stays in the log.
    for leak in ("Traceback", "/work", "/no/such", "pid", "10.1.2.3", "FileNotFoundError"):
        assert leak not in err.message
    assert app.calls == [] and stack.inflight("llm-1") == 0


async def test_unhealthy_application_with_a_running_replica_still_serves():
    stack = _stack(llm_app("ok"), status="UNHEALTHY", running=1)
    assert (await _call(stack)).choices[0].text == "ok"


async def test_wrong_task_is_400_model_task_mismatch():
    stack = _stack(llm_app())
    with pytest.raises(OpenAIError) as caught:
        await _call(stack, task="embeddings")
    err = caught.value
    assert (err.status, err.code, err.param) == (400, "model_task_mismatch", "model")
    assert stack.serve.apps["llm-1"].calls == []


async def test_unknown_model_is_404_model_not_found():
    stack = _stack(llm_app())
    with pytest.raises(OpenAIError) as caught:
        await _call(stack, model="nope")
    err = caught.value
    assert (err.status, err.code, err.param, err.type) == (
        404,
        "model_not_found",
        "model",
        "not_found_error",
    )
    assert "nope" in err.message


async def test_handles_are_built_once_per_mode():
    stack = _stack(llm_app())
    for _ in range(3):
        await _call(stack)
    stream = await _open(stack)
    stream.close()
    assert stack.serve.lookups == ["llm-1", "llm-1"]  # one per (app, stream) pair
    assert stack.serve.apps["llm-1"].options_calls == [False, True]


async def test_to_thread_if_runs_large_work_off_the_loop():
    import threading

    main = threading.get_ident()
    assert await forward.to_thread_if(False, lambda: str(threading.get_ident())) == str(main)
    assert await forward.to_thread_if(True, lambda: str(threading.get_ident())) != str(main)


async def test_client_leaving_while_waiting_for_a_replica_cancels_the_call():
    app = llm_app(assigned=False)
    stack = _stack(app, wait_timeout_s=30)
    task = asyncio.ensure_future(_call(stack))
    await until(lambda: app.calls, "the call to reach Serve's queue")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.last.cancelled and stack.inflight("llm-1") == 0


async def test_client_leaving_before_the_first_token_cancels_the_stream():
    app = FakeApplication(streams={"generate": lambda _: []}, then_hang=True)  # long prefill
    stack = _stack(app)
    task = asyncio.ensure_future(_open(stack))
    await until(lambda: app.calls, "the stream to reach the model")
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.last.cancelled and stack.inflight("llm-1") == 0


async def test_replica_exception_as_first_stream_item_propagates_and_releases():
    full = BackPressureError(num_queued_requests=3, max_queued_requests=3)
    app = FakeApplication(streams={"generate": lambda _: [full]})
    stack = _stack(app)
    with pytest.raises(BackPressureError):
        await _open(stack)
    assert app.last.cancelled and stack.inflight("llm-1") == 0


# --- the per-key limit ------------------------------------------------------------------


def _keyed_stack(app: FakeApplication, key_limit: int, model_limit: int = 200) -> Stack:
    metrics, _, _ = recording_metrics()
    stack = make_stack(
        {"llm-1": app_details("m", max_concurrent_requests=model_limit)},
        {"llm-1": app},
        metrics=metrics,
    )
    stack.forwarder.key_limit = key_limit
    return stack


async def _keyed_call(stack: Stack, key: str | None) -> Any:
    ctx = RequestContext("R", "chat", api_key=key)
    entry = await stack.forwarder.resolve(ctx, "m")
    return await stack.forwarder.call(ctx, entry, "complete", PAYLOAD)


async def test_per_key_limit_is_a_429_for_that_key_only():
    app = llm_app(answers=False)
    stack = _keyed_stack(app, key_limit=1)
    rejected = stack.forwarder.metrics.rejected
    held = asyncio.ensure_future(_keyed_call(stack, "k1"))
    await until(lambda: app.calls, "the first call of key k1 to reach the model")

    with pytest.raises(OpenAIError) as caught:
        await _keyed_call(stack, "k1")
    err = caught.value
    assert (err.status, err.code, err.headers()) == (429, "rate_limited", {"Retry-After": "1"})
    assert "this API key" in err.message and "k1" not in err.message
    assert rejected.records == [
        (1, {"model": "m", "deploy_id": "llm-1", "reason": "key_concurrency_limit"})
    ]
    assert len(app.calls) == 1 and stack.inflight("llm-1") == 1  # the refusal took no slot

    other = asyncio.ensure_future(_keyed_call(stack, "k2"))  # another key is not limited
    await until(lambda: len(app.calls) >= 2, "the call of key k2 to reach the model")
    for call in app.calls:
        call.response.answer()
    await asyncio.gather(held, other)
    assert stack.forwarder.key_limiter.inflight("k1") == 0 == stack.inflight("llm-1")
    app.answers = True
    await _keyed_call(stack, "k1")  # the slot came back


async def test_model_limit_refusal_gives_the_key_slot_back():
    app = llm_app(answers=False)
    stack = _keyed_stack(app, key_limit=5, model_limit=1)
    held = asyncio.ensure_future(_keyed_call(stack, "k1"))
    await until(lambda: app.calls, "the held call to reach the model")
    with pytest.raises(OpenAIError) as caught:
        await _keyed_call(stack, "k1")
    assert "'m'" in caught.value.message
    assert stack.forwarder.key_limiter.inflight("k1") == 1
    assert [tags["reason"] for _, tags in stack.forwarder.metrics.rejected.records] == [
        "concurrency_limit"
    ]
    app.last.answer()
    await held
    assert stack.forwarder.key_limiter.inflight("k1") == 0


async def test_without_a_key_there_is_no_per_key_limit():
    app = llm_app(answers=False)
    stack = _keyed_stack(app, key_limit=1)
    calls = [asyncio.ensure_future(_keyed_call(stack, None)) for _ in range(3)]
    await until(lambda: len(app.calls) >= 3, "the three keyless calls to reach the model")
    for call in app.calls:
        call.response.answer()
    await asyncio.gather(*calls)


async def test_a_stream_holds_its_key_slot_until_closed():
    app = FakeApplication(streams={"generate": lambda _: chunks("Hi")})
    stack = _keyed_stack(app, key_limit=1)
    ctx = RequestContext("R", "chat", api_key="k1")
    entry = await stack.forwarder.resolve(ctx, "m")
    stream = await stack.forwarder.open_stream(ctx, entry, "generate", PAYLOAD)
    assert stack.forwarder.key_limiter.inflight("k1") == 1
    with pytest.raises(OpenAIError):
        await stack.forwarder.open_stream(ctx, entry, "generate", PAYLOAD)
    stream.close()
    assert stack.forwarder.key_limiter.inflight("k1") == 0 == stack.inflight("llm-1")


async def test_client_leaving_gives_the_key_slot_back():
    app = FakeApplication(streams={"generate": lambda _: []}, then_hang=True)
    stack = _keyed_stack(app, key_limit=1)
    ctx = RequestContext("R", "chat", api_key="k1")
    entry = await stack.forwarder.resolve(ctx, "m")
    task = asyncio.ensure_future(stack.forwarder.open_stream(ctx, entry, "generate", PAYLOAD))
    await until(lambda: app.calls, "the stream to reach the model")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.last.cancelled
    assert stack.forwarder.key_limiter.inflight("k1") == 0 == stack.inflight("llm-1")


def _lora_stack(app: FakeApplication) -> Stack:
    details = app_details("m", version="base", max_concurrent_requests=1)
    details["deployments"]["Model"]["deployment_config"]["user_config"]["adapters"] = [
        {"version": "shared", "source": "/s"},
        {"version": "own", "source": "/o", "max_concurrent_requests": 1},
    ]
    return make_stack({"llm-1": details}, {"llm-1": app})


async def test_an_adapter_goes_to_its_base_application_with_its_multiplexed_id():
    stack = _lora_stack(llm_app("ok"))
    await _call(stack, model="m:shared")
    await _call(stack, model="m:base")
    calls = stack.serve.apps["llm-1"].calls
    shared = stack.catalog.resolve("m:shared")
    assert shared is not None and shared.adapter is not None
    assert [c.model_id for c in calls] == [shared.adapter.model_id, None]


async def test_an_adapter_shares_its_bases_budget_unless_it_has_its_own():
    stack = _lora_stack(llm_app("ok"))
    held = await _open(stack)  # the base's one slot
    with pytest.raises(OpenAIError) as caught:
        await _call(stack, model="m:shared")
    assert caught.value.status == 429
    assert isinstance(await _call(stack, model="m:own"), GenerationResult)
    held.close()
    assert stack.inflight("llm-1") == 0 and stack.inflight("llm-1/own") == 0
