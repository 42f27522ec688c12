"""LLMServer streams, merges, aborts and fails per the contract, checked on a typed fake engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from deployments.contract import (
    AdapterSpec,
    ErrorInfo,
    GenerateRequest,
    GenerationChunk,
    GenerationResult,
    SamplingOptions,
)
from deployments.llm.server import LLMServer
from tests.fakes import (
    FailingEngine,
    FakeClientError,
    FakeEngine,
    FakeOutput,
    FakeStep,
    start_server,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}}},
        },
    }
]


def _config(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    # stream_interval_ms 0: every engine step is a chunk, so counts are exact.
    return {"model": "test/m", "model_source": str(model_dir), "stream_interval_ms": 0, **overrides}


def _chat(**fields: Any) -> GenerateRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return GenerateRequest(request_id="req-1", task="chat", **fields)


def _completion(prompts: list[str | list[int]], **fields: Any) -> GenerateRequest:
    return GenerateRequest(request_id="req-1", task="completion", prompts=prompts, **fields)


def _run(model_dir: Path, body: Any, engine_cls: Any = FakeEngine, **config: Any) -> Any:
    """Starts a server on `engine_cls` and runs `body(server, engine)` in one loop."""

    async def main() -> Any:
        server = await start_server(LLMServer, _config(model_dir, **config), engine_cls)
        try:
            return await body(server, server._engine)
        finally:
            server.__del__()

    return asyncio.run(main())


async def _items(server: LLMServer, request: GenerateRequest) -> list[Any]:
    return [item async for item in server.generate(request)]


def test_chat_streams_one_chunk_per_step_with_running_usage(tmp_path):
    items = _run(tmp_path, lambda s, e: _items(s, _chat()))
    assert all(isinstance(i, GenerationChunk) for i in items)
    assert ["".join(d.text for d in i.deltas) for i in items] == ["Hello", " world", "!", ""]
    assert [i.completion_tokens for i in items] == [1, 2, 3, 3]
    assert {i.prompt_tokens for i in items} == {3}
    assert [i.finished for i in items] == [False, False, False, True]
    assert items[2].deltas[0].finish_reason == "stop"


def test_complete_merges_n_choices(tmp_path):
    result = _run(tmp_path, lambda s, e: s.complete(_chat(sampling=SamplingOptions(n=2))))
    assert isinstance(result, GenerationResult)
    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (0, "Hello world!", "stop"),
        (1, "Hello world!", "stop"),
    ]
    assert (result.prompt_tokens, result.completion_tokens) == (3, 6)


def test_completion_of_several_prompts_numbers_choices_by_prompt(tmp_path):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        request = _completion(["a b", [5, 6, 7]], sampling=SamplingOptions(n=2, max_tokens=2))
        return await server.complete(request), engine.streamed

    result, streamed = _run(tmp_path, body)
    # choice index = prompt_index * n + i
    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (0, "Hello world", "length"),
        (1, "Hello world", "length"),
        (2, "Hello world", "length"),
        (3, "Hello world", "length"),
    ]
    assert result.prompt_tokens == 2 + 3 and result.completion_tokens == 4 * 2
    assert sorted(streamed) == ["req-1", "req-1-p1"]


def test_echo_prepends_the_prompt_once(tmp_path):
    result = _run(tmp_path, lambda s, e: s.complete(_completion(["a b"], echo=True)))
    assert result.choices[0].text == "a bHello world!"


class _ToolCallEngine(FakeEngine):
    pieces = ('{"utc": ', "true}")


def test_forced_tool_call_is_held_back_then_sent_as_a_call(tmp_path):
    request = _chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    items = _run(tmp_path, lambda s, e: _items(s, request), engine_cls=_ToolCallEngine)
    deltas = [d for i in items for d in i.deltas]
    assert len(deltas) == 1 and deltas[0].text == "" and deltas[0].finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in deltas[0].tool_calls] == [("get_time", '{"utc": true}')]


def test_the_request_sees_the_forced_schema(tmp_path):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        seen = []
        original = engine.sampling_params

        def record(*args: Any, **kwargs: Any) -> Any:
            seen.append(original(*args, **kwargs))
            return seen[-1]

        engine.sampling_params = record  # type: ignore[method-assign]
        await server.complete(_chat(tools=TOOLS, tool_choice="required"))
        await server.complete(_chat(response_format={"type": "json_object"}))
        return seen

    forced, json_object = _run(tmp_path, body)
    assert forced.json_schema["type"] == "array" and not forced.json_object
    assert json_object.json_schema is None and json_object.json_object


class _EndlessEngine(FakeEngine):
    pieces = tuple(f"t{i} " for i in range(1000))
    step_delay_s = 0.01


def test_closing_the_stream_aborts_the_engine_request(tmp_path):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        stream = server.generate(_chat())
        assert isinstance(await anext(stream), GenerationChunk)
        await stream.aclose()
        return engine.aborted, engine.num_unfinished_requests()

    aborted, unfinished = _run(tmp_path, body, engine_cls=_EndlessEngine)
    assert aborted == ["req-1"] and unfinished == 0


def test_cancelling_the_consumer_aborts_every_prompt(tmp_path):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        started = asyncio.Event()

        async def consume() -> None:
            stream: AsyncGenerator[Any, None] = server.generate(_completion(["a", "b"]))
            async for _ in stream:
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # the cancelled per-prompt tasks finish unwinding
        return engine.aborted, engine.num_unfinished_requests()

    aborted, unfinished = _run(tmp_path, body, engine_cls=_EndlessEngine)
    assert sorted(aborted) == ["req-1", "req-1-p1"] and unfinished == 0


def test_mid_stream_engine_failure_ends_in_an_internal_error_without_internals(tmp_path):
    items = _run(tmp_path, lambda s, e: _items(s, _chat()), engine_cls=FailingEngine)
    assert [type(i) for i in items] == [GenerationChunk, GenerationChunk, ErrorInfo]
    error = items[-1]
    assert error.kind == "internal" and error.param is None
    assert error.message == "Internal server error (request id req-1)."
    result = _run(tmp_path, lambda s, e: s.complete(_chat()), engine_cls=FailingEngine)
    assert isinstance(result, ErrorInfo) and result.kind == "internal"


class _RejectingEngine(FakeEngine):
    async def stream(
        self, prompt_ids: list[int], params: Any, request_id: str, adapter: Any = None
    ) -> AsyncGenerator[FakeStep, None]:
        raise FakeClientError("temperature is out of range", parameter="temperature")
        yield  # an async generator that fails on first use


def test_an_engine_client_error_keeps_its_message_and_param(tmp_path):
    result = _run(tmp_path, lambda s, e: s.complete(_chat()), engine_cls=_RejectingEngine)
    assert result == ErrorInfo("temperature is out of range", param="temperature")


@pytest.mark.parametrize(
    "request_, kind, param, code",
    [
        (
            _chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
            "invalid_request",
            "tool_choice",
            None,
        ),
        (_completion([[1, 500]]), "invalid_request", "prompt", None),
        (_chat(messages=[{"role": "bad", "content": "x"}]), "invalid_request", "messages", None),
        (
            _chat(sampling=SamplingOptions(max_tokens=1000)),
            "context_length",
            "messages",
            "context_length_exceeded",
        ),
        (
            _completion(["a"], sampling=SamplingOptions(max_tokens=1000)),
            "context_length",
            "prompt",
            "context_length_exceeded",
        ),
    ],
)
def test_planning_errors_are_the_callers_and_name_the_field(tmp_path, request_, kind, param, code):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        return await _items(server, request_), engine.streamed

    items, streamed = _run(tmp_path, body)
    assert len(items) == 1 and streamed == []
    error = items[0]
    assert (error.kind, error.param, error.code) == (kind, param, code)
    assert "Internal" not in error.message


class _BuggyEngine(FakeEngine):
    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        raise TypeError("'NoneType' object is not subscriptable at 0x7f00")


def test_a_bug_while_planning_is_internal_not_the_callers(tmp_path):
    result = _run(tmp_path, lambda s, e: s.complete(_chat()), engine_cls=_BuggyEngine)
    assert result.kind == "internal" and "0x7f00" not in result.message


# --- bounded work per request ---------------------------------------------------------


def test_the_models_limits_come_from_its_config(tmp_path):
    request = _completion(["a", "b"], sampling=SamplingOptions(n=2))
    result = _run(
        tmp_path, lambda s, e: s.complete(request), limits={"max_sequences_per_request": 3}
    )
    assert result == ErrorInfo(result.message, param="n", code="invalid_value")
    assert "4 sequences" in result.message and "at most 3" in result.message


class _SlowTemplateEngine(FakeEngine):
    """Renders the chat template of a "huge" prompt for 0.5 s, holding a thread (as a
    4 MB prompt through a real tokenizer does), and streams steadily."""

    pieces = tuple(f"t{i} " for i in range(40))
    step_delay_s = 0.02

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renders: list[tuple[float, float]] = []  # (start, end) of each huge render

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if messages[0]["content"] == "huge":
            start = time.monotonic()
            time.sleep(0.5)
            self.renders.append((start, time.monotonic()))
            return list(range(100))  # past the context: refused after rendering
        return super().render_chat(messages, tools)


def test_planning_runs_off_the_event_loop(tmp_path):
    async def body(server: LLMServer, engine: _SlowTemplateEngine) -> Any:
        arrivals: list[float] = []

        async def stream() -> None:
            async for _ in server.generate(_chat()):
                arrivals.append(time.monotonic())

        flowing = asyncio.create_task(stream())
        await asyncio.sleep(0.05)
        huge = _chat(messages=[{"role": "user", "content": "huge"}])
        refused = await asyncio.gather(*(server.complete(huge) for _ in range(3)))
        await flowing
        return arrivals, refused, engine.renders

    arrivals, refused, renders = _run(tmp_path, body, engine_cls=_SlowTemplateEngine)
    assert all(r.kind == "context_length" for r in refused)
    assert len(arrivals) == 41 and len(renders) == 3
    # Three 0.5 s renders ran meanwhile; the other stream never waited for them: its
    # chunks kept arriving while the first render held its thread (one on the event loop
    # would have held every chunk back until it ended). Read from the order of events,
    # not from a bound on the gaps, which a loaded machine stretches.
    start, end = min(renders)
    assert arrivals[0] < start < arrivals[-1], (arrivals, renders)  # the stream outlives it
    during = [t for t in arrivals if start < t < end]
    assert during, f"no chunk arrived during the render {start:.3f}-{end:.3f}: {arrivals}"


def test_cancelled_while_planning_starts_nothing_in_the_engine(tmp_path):
    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        huge = _chat(messages=[{"role": "user", "content": "huge"}])
        task = asyncio.create_task(server.complete(huge))
        await asyncio.sleep(0.1)  # in the template now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ok = await server.complete(_chat())
        return engine.streamed, engine.aborted, ok

    streamed, aborted, ok = _run(tmp_path, body, engine_cls=_SlowTemplateEngine)
    assert streamed == ["req-1"] and aborted == []  # only the later request ran
    assert isinstance(ok, GenerationResult)


class _GrammarFailureEngine(FakeEngine):
    """Ends each request as vLLM does when its grammar fails to compile: one step,
    no tokens, finish_reason "error" (after `good_steps` ordinary steps)."""

    good_steps = 0

    def script(self, params: Any) -> list[FakeStep]:
        good = [FakeStep([FakeOutput(0, f"t{i} ", [i])]) for i in range(self.good_steps)]
        return [*good, FakeStep([FakeOutput(0, "", [], "error")], finished=True)]


class _LateFailureEngine(_GrammarFailureEngine):
    good_steps = 2


def test_an_engine_failed_request_is_an_error_not_a_finish_reason(tmp_path):
    request = _chat(response_format={"type": "json_object"})
    result = _run(tmp_path, lambda s, e: s.complete(request), engine_cls=_GrammarFailureEngine)
    assert result == ErrorInfo("Internal server error (request id req-1).", kind="internal")
    items = _run(tmp_path, lambda s, e: _items(s, request), engine_cls=_LateFailureEngine)
    assert [type(i) for i in items] == [GenerationChunk, GenerationChunk, ErrorInfo]
    assert items[-1].kind == "internal"


@pytest.mark.parametrize("concurrent, held", [(1, False), (3, True)])
def test_chunks_are_held_only_under_load(tmp_path, monkeypatch, concurrent, held):
    """stream_interval_ms applies only while at least stream_hold_min_streams
    generations run: one stream is sent step by step with no added latency."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> Any:
        if delay > 0:
            sleeps.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr("deployments.llm.server.asyncio.sleep", recording_sleep)

    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        return await asyncio.gather(*(_items(server, _chat()) for _ in range(concurrent)))

    results = _run(tmp_path, body, stream_interval_ms=50, stream_hold_min_streams=2)
    assert all(len(items) == 4 for items in results)  # nothing lost either way
    assert bool(sleeps) is held and all(s == 0.05 for s in sleeps)


def test_an_adapter_request_runs_on_its_adapter_and_a_broken_one_fails_alone(tmp_path):
    good = tmp_path / "good-adapter"
    broken = tmp_path / "corrupt-adapter"
    good.mkdir()
    broken.mkdir()
    lora = {"engine": {"engine_kwargs": {"enable_lora": True, "max_loras": 1}}}

    async def body(server: LLMServer, engine: Any) -> Any:
        adapted = await server.complete(_chat(adapter=AdapterSpec(version="a", source=str(good))))
        base = await server.complete(_chat())
        failed = await server.complete(_chat(adapter=AdapterSpec(version="b", source=str(broken))))
        return adapted, base, failed, engine

    adapted, base, failed, engine = _run(tmp_path, body, **lora)
    assert adapted.choices[0].text == "[a] Hello world!" and base.choices[0].text == "Hello world!"
    assert engine.stream_adapters == ["a", None]
    assert isinstance(failed, ErrorInfo)
    assert (failed.kind, failed.code) == ("unavailable", "adapter_unavailable")
    assert "'test/m:b' (a LoRA adapter) cannot be loaded: its files are not" in failed.message
    assert str(broken) not in failed.message and "req-1" in failed.message


def test_adapters_need_lora_on_the_engine(tmp_path):
    spec = AdapterSpec(version="a", source=str(tmp_path))
    failed = _run(tmp_path, lambda s, e: s.complete(_chat(adapter=spec)))
    assert isinstance(failed, ErrorInfo) and "LoRA is not enabled" in failed.message


def _line(i: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"line-{i}",
        task="chat",
        messages=[{"role": "user", "content": "hi"}],
        background=True,
    )


def test_an_online_request_evicts_batch_lines_which_run_again_after_it(tmp_path):
    """background_while_online 1: three batch lines run; an online request arrives and
    two of them (the newest) leave the engine (aborted), then run again from the start
    once it ends; every line's result is whole."""

    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        engine.step_delay_s = 0.05  # 3 steps: 0.15 s per generation
        lines = [asyncio.create_task(server.complete(_line(i))) for i in range(3)]
        await asyncio.sleep(0.02)
        assert sum(r.startswith("line-") for r in engine.streamed) == 3
        online = asyncio.create_task(_items(server, _chat()))
        await asyncio.sleep(0.02)
        gate = server._online_first
        during = (gate.background, gate.waiting, gate.evictions)
        results = await asyncio.gather(*lines)
        await online
        return during, results

    during, results = _run(tmp_path, body, background_while_online=1)
    assert during == (1, 2, 2)
    assert all(isinstance(r, GenerationResult) for r in results)
    assert all(r.choices[0].text == "Hello world!" for r in results)
    assert all(r.completion_tokens == 3 for r in results)


def test_an_online_request_waits_for_no_batch_line(tmp_path):
    """With while_online 0, the online request finishes first though three lines ran."""

    async def body(server: LLMServer, engine: FakeEngine) -> Any:
        engine.step_delay_s = 0.05
        order: list[str] = []

        async def line(i: int) -> None:
            await server.complete(_line(i))
            order.append(f"line-{i}")

        async def online() -> None:
            await _items(server, _chat())
            order.append("online")

        lines = [asyncio.create_task(line(i)) for i in range(3)]
        await asyncio.sleep(0.02)
        await asyncio.gather(online(), *lines)
        return order, engine.aborted

    order, aborted = _run(tmp_path, body, background_while_online=0)
    assert order[0] == "online" and sorted(order[1:]) == ["line-0", "line-1", "line-2"]
    assert len([a for a in aborted if a.startswith("line-")]) >= 3
