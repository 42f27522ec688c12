"""Engine steps become choice deltas: indices, echo, logprobs and tool-call hold-back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from deployments.contract import GenerateRequest, SamplingOptions
from deployments.errors import InvalidInput, PromptTooLong
from deployments.llm.config import EngineConfig, LLMLimits
from deployments.llm.plan import ChoiceAssembler, Plan, build_plan
from tests.fakes import FakeEngine, FakeOutput, FakeStep, FakeToolParser

TOOLS = [
    {"type": "function", "function": {"name": "get_time"}},
    {"type": "function", "function": {"name": "get_date"}},
]
NAMED = {"type": "function", "function": {"name": "get_time"}}


@dataclass
class _Logprob:
    """vLLM's Logprob: what convert_logprobs reads."""

    logprob: float
    rank: int | None
    decoded_token: str | None


def _plan(
    mode: str = "text",
    *,
    n: int = 1,
    tool_choice: Any = None,
    logprobs: int | None = None,
    echo_texts: list[str] | None = None,
    prompts: int = 1,
) -> Plan:
    return Plan(
        prompts=[[1, 2]] * prompts,
        params=None,
        n=n,
        logprobs=logprobs,
        echo_texts=echo_texts,
        tool_mode=mode,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice=tool_choice,
        tool_parser=FakeToolParser(),
    )


def _step(*outputs: tuple[int, str, str | None]) -> FakeStep:
    return FakeStep([FakeOutput(i, text, [7], reason) for i, text, reason in outputs])


def test_text_passes_through_with_request_wide_indices():
    assembler = ChoiceAssembler(_plan(n=2, prompts=2), prompt_index=1)
    deltas = assembler.step(_step((0, "a", None), (1, "b", "stop")))
    assert [(d.index, d.text, d.finish_reason) for d in deltas] == [
        (2, "a", None),
        (3, "b", "stop"),
    ]


def test_echo_prefixes_the_first_delta_of_each_choice_only():
    assembler = ChoiceAssembler(_plan(n=2, echo_texts=["say: "]), prompt_index=0)
    first = assembler.step(_step((0, "x", None), (1, "y", None)))
    second = assembler.step(_step((0, "z", "stop"), (1, "w", "stop")))
    assert [d.text for d in first] == ["say: x", "say: y"]
    assert [d.text for d in second] == ["z", "w"]


def test_forced_call_is_held_until_the_end_then_becomes_calls():
    assembler = ChoiceAssembler(_plan("forced", tool_choice=NAMED), prompt_index=0)
    assert assembler.step(_step((0, '{"utc"', None))) == []
    [delta] = assembler.step(_step((0, ": true}", "stop")))
    assert delta.text == "" and delta.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in delta.tool_calls] == [("get_time", '{"utc": true}')]


def test_forced_output_cut_short_is_released_as_text():
    assembler = ChoiceAssembler(_plan("forced", tool_choice=NAMED), prompt_index=0)
    assembler.step(_step((0, '{"utc"', None)))
    [delta] = assembler.step(_step((0, ": tr", "length")))
    assert (delta.text, delta.finish_reason, delta.tool_calls) == ('{"utc": tr', "length", None)


def test_required_call_lists_every_call():
    assembler = ChoiceAssembler(_plan("forced", tool_choice="required"), prompt_index=0)
    [delta] = assembler.step(
        _step(
            (
                0,
                '[{"name": "get_time", "parameters": {}}, {"name": "get_date", '
                '"parameters": {"tz": "UTC"}}]',
                "stop",
            )
        )
    )
    assert [(c.name, c.arguments) for c in delta.tool_calls] == [
        ("get_time", "{}"),
        ("get_date", '{"tz": "UTC"}'),
    ]


def test_parsed_calls_keep_the_text_beside_them():
    assembler = ChoiceAssembler(_plan("parse"), prompt_index=0)
    assert assembler.step(_step((0, "Checking.\n", None))) == []
    [delta] = assembler.step(_step((0, "CALL get_time {}", "stop")))
    assert delta.text == "Checking." and delta.finish_reason == "tool_calls"
    assert [c.name for c in delta.tool_calls] == ["get_time"]


def test_parse_mode_without_calls_releases_the_whole_text():
    assembler = ChoiceAssembler(_plan("parse"), prompt_index=0)
    assembler.step(_step((0, "just ", None)))
    [delta] = assembler.step(_step((0, "text", "stop")))
    assert (delta.text, delta.finish_reason, delta.tool_calls) == ("just text", "stop", None)


def test_logprobs_are_not_held_back_with_the_text():
    assembler = ChoiceAssembler(_plan("forced", tool_choice=NAMED, logprobs=1), prompt_index=0)
    position = {7: _Logprob(-0.5, 1, "{"), 8: _Logprob(-2.0, 2, "[")}
    [held] = assembler.step(FakeStep([FakeOutput(0, "{", [7], None, [position])]))
    assert held.text == "" and held.finish_reason is None
    assert [(lp.token, lp.logprob, lp.top) for lp in held.logprobs] == [("{", -0.5, [("{", -0.5)])]


def _request(**fields: Any) -> GenerateRequest:
    return GenerateRequest(
        request_id="r", task="chat", messages=[{"role": "user", "content": "hi"}], **fields
    )


def test_build_plan_picks_the_tool_mode():
    engine = FakeEngine(EngineConfig(), "/m")
    parser = FakeToolParser()
    assert build_plan(engine, _request(tools=TOOLS), parser).tool_mode == "parse"
    assert build_plan(engine, _request(tools=TOOLS), None).tool_mode == "text"
    assert build_plan(engine, _request(tools=TOOLS, tool_choice="none"), parser).tool_mode == "text"
    forced = build_plan(engine, _request(tools=TOOLS, tool_choice=NAMED), parser)
    assert forced.tool_mode == "forced" and forced.params.json_schema == {"type": "object"}


def test_build_plan_counts_prompt_tokens_of_every_prompt():
    engine = FakeEngine(EngineConfig(), "/m")
    plan = build_plan(
        engine,
        GenerateRequest(
            request_id="r",
            task="completion",
            prompts=["a b c", [4, 5]],
            sampling=SamplingOptions(n=3),
        ),
    )
    assert plan.prompts == [engine.encode("a b c"), [4, 5]] and plan.prompt_tokens == 5
    assert plan.n == 3 and plan.engine_request_id("r", 1) == "r-p1"


# --- the model's bounds on one request (LLMLimits) ----------------------------------
# The fake engine has a 64-token context and one token per word of a text prompt.


def _completion(prompts: list[str | list[int]], **sampling: Any) -> GenerateRequest:
    fields = {k: sampling.pop(k) for k in ("echo", "logprobs") if k in sampling}
    return GenerateRequest(
        request_id="r",
        task="completion",
        prompts=prompts,
        sampling=SamplingOptions(**sampling),
        **fields,
    )


def _refused(request: GenerateRequest, engine: Any = None, **limits: Any) -> InvalidInput:
    """build_plan's refusal, checked to be a bound (not a context-length) error."""
    engine = engine or FakeEngine(EngineConfig(), "/m")
    with pytest.raises(InvalidInput) as caught:
        build_plan(engine, request, None, LLMLimits(**limits))
    assert not isinstance(caught.value, PromptTooLong) and caught.value.code == "invalid_value"
    return caught.value


class _CountingEngine(FakeEngine):
    """Records how many prompts were tokenised."""

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        super().__init__(config, model_path)
        self.encoded = 0

    def encode(self, text: str) -> list[int]:
        self.encoded += 1
        return super().encode(text)


def test_sequences_are_refused_before_anything_is_tokenised():
    engine = _CountingEngine(EngineConfig(), "/m")
    err = _refused(_completion(["a"] * 3, n=22), engine)
    assert err.parameter == "n" and "66 sequences" in str(err) and "64" in str(err)
    assert engine.encoded == 0
    assert _refused(_request(sampling=SamplingOptions(n=3)), max_sequences_per_request=2)
    build_plan(engine, _completion(["a"] * 4, n=16))


def test_prompt_tokens_per_request_stop_tokenising_at_the_bound():
    engine = _CountingEngine(EngineConfig(), "/m")
    err = _refused(_completion(["a b c"] * 10), engine, max_prompt_tokens_per_request=7)
    assert err.parameter == "prompt" and "7 prompt tokens" in str(err)
    assert engine.encoded == 3  # 9 tokens passed the bound at the third prompt
    # Default: 4 x the context (256 tokens for the fake's 64).
    assert _refused(_completion(["w " * 60] * 5)).parameter == "prompt"
    build_plan(engine, _completion(["w " * 60] * 4))
    chat = _refused(_request(), max_prompt_tokens_per_request=2)  # the fake renders 3 tokens
    assert chat.parameter == "messages"


def test_max_tokens_cap_refuses_larger_asks_and_is_the_default():
    engine = FakeEngine(EngineConfig(), "/m")
    err = _refused(_request(sampling=SamplingOptions(max_tokens=11)), max_tokens=10)
    assert err.parameter == "max_tokens" and "at most 10" in str(err)
    plan = build_plan(engine, _request(), None, LLMLimits(max_tokens=10))
    assert plan.params.sampling.max_tokens == 10
    # Without a cap the engine's default stays: what the context leaves.
    assert build_plan(engine, _request()).params.sampling.max_tokens is None


def test_a_prompt_past_the_context_is_still_a_context_length_error():
    engine = FakeEngine(EngineConfig(), "/m")
    request = _request(sampling=SamplingOptions(max_tokens=1000))
    with pytest.raises(PromptTooLong):
        build_plan(engine, request, None, LLMLimits(max_tokens=10))


def test_ignore_eos_is_allowed_only_within_the_cap():
    # 2 prompts x n=2 x 16 tokens = 64: the fake's whole context.
    build_plan(
        FakeEngine(EngineConfig(), "/m"),
        _completion(["a", "b"], n=2, max_tokens=16, ignore_eos=True),
    )
    err = _refused(_completion(["a", "b"], n=2, max_tokens=17, ignore_eos=True))
    assert err.parameter == "ignore_eos" and "4 sequences × 17 tokens" in str(err)
    # With no max_tokens every sequence runs to what the context leaves.
    assert _refused(_completion(["a"], n=2, ignore_eos=True)).parameter == "ignore_eos"
    assert _refused(_completion(["a"], max_tokens=9, ignore_eos=True), max_tokens=8)


def test_logprob_volume_counts_the_default_max_tokens_and_echo():
    err = _refused(_request(logprobs=5), max_logprob_entries=100)  # 61 default tokens x 6
    assert err.parameter == "top_logprobs" and "366" in str(err)
    assert _refused(_request(logprobs=0), max_logprob_entries=60).parameter == "logprobs"
    echo = _completion(["a b c d"], n=2, max_tokens=4, echo=True, logprobs=1)  # 2 x (4+4) x 2
    assert _refused(echo, max_logprob_entries=31).parameter == "logprobs"
    build_plan(FakeEngine(EngineConfig(), "/m"), echo, None, LLMLimits(max_logprob_entries=32))
