"""Bounded work per request, checked in the ingress: every bound is a 400 naming the
field, its message gives the bound, and nothing reaches a model."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ingress.bounds import RequestBounds, check_chat, check_completion
from ingress.config import IngressConfig
from ingress.errors import OpenAIError
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.completions import CompletionRequest
from tests.ingress.fakes import API, error_of, standard_stack

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hi"}]
BOUNDS = RequestBounds()
# The black-box run's schema: ~300 bytes that held a replica for minutes.
PATHOLOGICAL = {
    "type": "object",
    "properties": {"a": {"type": "string", "pattern": "^(a+)+(b|c+)*(d*)*$" * 20}},
    "required": ["a"],
}


def _chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


def _completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})


async def _refused(check: Any, bounds: RequestBounds = BOUNDS, **kw: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        await check(bounds, **kw)
    err = caught.value
    assert (err.status, err.code, err.type) == (400, "invalid_value", "invalid_request_error")
    return err


def _schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _tool(parameters: Any, name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# --- stop, messages, prompts, tools ---------------------------------------------------


async def test_five_stop_strings_are_refused_four_pass():
    err = await _refused(check_chat, req=_chat(stop=["a", "b", "c", "d", "e"]))
    assert err.param == "stop" and "at most 4" in err.message
    await check_chat(BOUNDS, _chat(stop=["a", "b", "c", "d"]))


async def test_a_long_stop_string_is_refused():
    err = await _refused(check_completion, req=_completion(stop="s" * 257))
    assert err.param == "stop" and "256" in err.message
    await check_completion(BOUNDS, _completion(stop=["s" * 256] * 4))


async def test_too_many_messages():
    err = await _refused(check_chat, req=_chat(messages=USER * 2049))
    assert err.param == "messages" and "2048" in err.message


async def test_message_characters_count_text_parts_and_tool_call_arguments():
    bounds = RequestBounds(max_prompt_chars=10)
    parts = [{"role": "user", "content": [{"type": "text", "text": "x" * 6}] * 2}]
    err = await _refused(check_chat, bounds, req=_chat(messages=parts))
    assert err.param == "messages" and "12 characters" in err.message
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "y" * 11}}
    calls = [{"role": "assistant", "tool_calls": [call]}]
    assert (await _refused(check_chat, bounds, req=_chat(messages=calls))).param == "messages"
    await check_chat(bounds, _chat(messages=[{"role": "user", "content": "x" * 10}]))


async def test_completion_prompt_characters_add_up_over_prompts():
    bounds = RequestBounds(max_prompt_chars=10)
    err = await _refused(check_completion, bounds, req=_completion(prompt=["x" * 6, "y" * 5]))
    assert err.param == "prompt" and "11 characters" in err.message
    # Token-id prompts are the replica's to count (in tokens).
    await check_completion(bounds, _completion(prompt=[[1] * 50]))


async def test_too_many_tools():
    tools = [_tool({"type": "object"}, f"f{i}") for i in range(3)]
    err = await _refused(check_chat, RequestBounds(max_tools=2), req=_chat(tools=tools))
    assert err.param == "tools"


# --- sequences and logprobs -----------------------------------------------------------


async def test_sequences_are_prompts_times_n():
    err = await _refused(check_completion, req=_completion(prompt=["a", "b", "c"], n=22))
    assert err.param == "n" and "3 prompts × n=22 = 66" in err.message
    await check_completion(BOUNDS, _completion(prompt=["a"] * 4, n=16))
    err = await _refused(check_chat, RequestBounds(max_sequences_per_request=2), req=_chat(n=3))
    assert err.param == "n"


async def test_logprob_volume_with_max_tokens_known():
    bounds = RequestBounds(max_logprob_entries=1000)
    req = _chat(n=2, max_tokens=100, logprobs=True, top_logprobs=5)  # 2 × 100 × 6
    err = await _refused(check_chat, bounds, req=req)
    assert err.param == "top_logprobs" and "1000" in err.message
    req = _completion(prompt=["a", "b"], max_tokens=100, logprobs=5)  # 2 × 100 × 6
    assert (await _refused(check_completion, bounds, req=req)).param == "logprobs"
    await check_chat(bounds, _chat(n=2, max_tokens=100, logprobs=True, top_logprobs=4))


async def test_logprob_volume_uses_the_ingress_cap_when_max_tokens_is_absent():
    bounds = RequestBounds(max_logprob_entries=1000)
    req = _chat(logprobs=True, top_logprobs=9)
    await _refused(check_chat, bounds, req=req, max_tokens_cap=101)
    # Neither known: the model replica checks it with its own default.
    await check_chat(bounds, req)


# --- schemas --------------------------------------------------------------------------


@pytest.fixture
def schema_checks(monkeypatch) -> list[Any]:
    """Every schema given to jsonschema's own check (which still runs): the slow step
    that the budgets must stop a schema before."""
    from jsonschema import Draft202012Validator

    real = Draft202012Validator.check_schema
    checked: list[Any] = []

    def check_schema(schema: Any, *args: Any, **kwargs: Any) -> None:
        checked.append(schema)
        real(schema, *args, **kwargs)

    monkeypatch.setattr(Draft202012Validator, "check_schema", staticmethod(check_schema))
    return checked


async def _fastest(check: Any, req: Any, refused: bool, runs: int = 3) -> float:
    """The fastest of a few runs of one check: a loaded machine only adds time, so the
    minimum is what the check itself costs."""
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        if refused:
            await _refused(check, req=req)
        else:
            await check(BOUNDS, req)
        took.append(time.perf_counter() - start)
    return min(took)


# The yardstick for "at once", measured in the same test on the same machine: an ordinary
# request with a 100-property schema, which jsonschema checks (~25 ms here).
ORDINARY = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(100)}}


async def test_the_pathological_pattern_of_the_black_box_run_is_refused_at_once(schema_checks):
    ordinary = await _fastest(check_chat, _chat(response_format=_schema_format(ORDINARY)), False)
    checked = len(schema_checks)
    assert checked, "jsonschema's check is not where the recorder looks"
    req = _chat(response_format=_schema_format(PATHOLOGICAL))
    refusing = await _fastest(check_chat, req, True)
    err = await _refused(check_chat, req=req)
    assert len(schema_checks) == checked  # refused by the budgets: jsonschema never ran
    # Cheaper than accepting an ordinary schema (not an absolute bound: those flake on
    # a loaded 2-core machine).
    assert refusing < ordinary, (refusing, ordinary)
    assert err.param == "response_format.json_schema.schema.properties.a.pattern"
    assert "(a+)+" in err.message


async def test_a_bad_tool_schema_is_400_naming_the_tool():
    bad = _tool({"type": "object", "properties": {"a": {"type": 5}}})
    err = await _refused(check_chat, req=_chat(tools=[_tool({"type": "object"}, "ok"), bad]))
    assert err.param == "tools.1.function.parameters"
    assert err.message.startswith("Invalid JSON schema in tools.1.function.parameters")


async def test_a_bad_response_format_schema_is_400():
    err = await _refused(
        check_completion, req=_completion(response_format=_schema_format({"type": 5}))
    )
    assert err.param == "response_format.json_schema.schema"


async def test_schema_budgets_are_shared_by_tools_and_response_format():
    bounds = RequestBounds.model_validate({"schemas": {"max_nodes": 9}})
    small = {"type": "object", "properties": {"a": {"type": "string"}}}  # 5 values
    await check_chat(bounds, _chat(tools=[_tool(small)]))
    err = await _refused(
        check_chat, bounds, req=_chat(tools=[_tool(small)], response_format=_schema_format(small))
    )
    assert err.param == "response_format.json_schema.schema" and "9 values" in err.message


async def test_a_huge_schema_is_refused_without_validating_it(schema_checks):
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
    ordinary = await _fastest(check_chat, _chat(response_format=_schema_format(ORDINARY)), False)
    checked = len(schema_checks)
    assert checked, "jsonschema's check is not where the recorder looks"
    refusing = await _fastest(check_chat, _chat(response_format=_schema_format(schema)), True)
    # jsonschema's own check of this schema takes seconds; the budget stops first...
    assert len(schema_checks) == checked
    # ...and refusing it costs less than accepting a schema 200 times smaller.
    assert refusing < ordinary, (refusing, ordinary)


def test_ingress_config_takes_bounds_from_its_args():
    config = IngressConfig.model_validate(
        {"bounds": {"max_stop_sequences": 2, "schemas": {"max_depth": 3}}}
    )
    assert config.bounds.max_stop_sequences == 2 and config.bounds.schemas.max_depth == 3
    assert IngressConfig().bounds == RequestBounds()


# --- through the app ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/chat/completions", {"messages": USER, "stop": ["1", "2", "3", "4", "5"]}, "stop"),
        ("/completions", {"prompt": ["a"] * 5, "n": 13}, "n"),
        (
            "/chat/completions",
            {"messages": USER, "response_format": _schema_format(PATHOLOGICAL), "stream": True},
            "response_format.json_schema.schema.properties.a.pattern",
        ),
        ("/chat/completions", {"messages": USER, "top_k": 10**30}, "top_k"),
        ("/completions", {"prompt": [[1, 10**30]]}, "prompt"),
        ("/completions", {"prompt": "x" * (1024 * 1024 + 1)}, "prompt"),
    ],
)
async def test_over_a_bound_is_400_and_reaches_no_model(path, body, param):
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(f"{API}{path}", json={"model": "org/llm", **body})
    assert error_of(response, 400)["param"] == param
    assert stack.serve.apps["llm-1"].calls == []
