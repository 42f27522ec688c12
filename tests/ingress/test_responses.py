"""The Responses API's pure logic (ingress/responses.py): input items → chat
messages, request → chat request, engine output → Response objects and events, each
validated against OpenAI's own schemas."""

from __future__ import annotations

import json

import pytest

from deployments.contract import ChoiceDelta, GenerationChunk, GenerationResult, ToolCall
from ingress import responses as logic
from ingress.errors import OpenAIError
from ingress.http import parse
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.responses import CreateResponseRequest
from tests.openapi import validate, validate_event


def _req(**fields) -> CreateResponseRequest:
    return parse(CreateResponseRequest, {"model": "m", "input": "hi", **fields})


def _events(text: str) -> list[dict]:
    out = []
    for frame in text.split("\n\n"):
        if frame:
            kind, data = frame.split("\n")
            body = json.loads(data.removeprefix("data: "))
            assert kind == f"event: {body['type']}"
            out.append(body)
    return out


# --- input ---------------------------------------------------------------------------


def test_a_string_is_one_user_message():
    items = logic.parse_items("hello")
    assert logic.chat_messages(items, "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]


def test_items_become_chat_turns_with_tool_calls_on_the_assistant_turn():
    items = logic.parse_items(
        [
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "b", "annotations": []}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ]
    )
    messages = logic.chat_messages(items, None)
    assert [m["role"] for m in messages] == ["developer", "user", "assistant", "tool"]
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    # The chat wire type takes them as they are.
    parse(ChatCompletionRequest, {"model": "m", "messages": messages})


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([{"type": "web_search_call", "id": "x"}], "input.0.type"),
        (
            [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}],
            "input.0.content.0.type",
        ),
        (
            [
                {"role": "user", "content": "ok"},
                {"type": "function_call", "name": "f", "arguments": "{}"},
            ],
            "input.1.call_id",
        ),
        ([{"role": "tool", "content": "x"}], "input.0.role"),
        ([{"role": "user", "content": 5}], "input.0.content"),
    ],
)
def test_a_bad_item_is_named_by_its_place(raw, param):
    with pytest.raises(OpenAIError) as err:
        logic.parse_items(raw)
    assert err.value.status == 400 and err.value.param == param


def test_only_function_tools():
    with pytest.raises(OpenAIError) as err:
        logic.parse_tools([{"type": "function", "name": "f"}, {"type": "web_search"}])
    assert err.value.param == "tools.1.type"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ],
)
def test_unsupported_fields_are_400s_naming_them(fields, param):
    with pytest.raises(OpenAIError) as err:
        logic.check_supported(parse(CreateResponseRequest, {"model": "m", "input": "x", **fields}))
    assert err.value.param == param


def test_off_values_of_unsupported_fields_pass():
    logic.check_supported(_req(include=[], reasoning={"effort": None}, background=False))


def test_the_chat_request_carries_every_setting():
    req = _req(
        instructions="sys",
        max_output_tokens=7,
        temperature=0.5,
        top_p=0.9,
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
    )
    tools = logic.parse_tools(req.tools)
    chat = logic.to_chat(req, logic.parse_items(req.input), tools)
    assert chat["max_completion_tokens"] == 7 and chat["temperature"] == 0.5
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}},
    }
    assert parse(ChatCompletionRequest, chat).parallel_tool_calls is False


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages", "input"),
        ("messages.3.content", "input"),
        ("max_completion_tokens", "max_output_tokens"),
        ("response_format.json_schema.schema", "text.format"),
        ("tools.2.function.parameters", "tools.2.parameters"),
        ("temperature", "temperature"),
        (None, None),
    ],
)
def test_chat_params_map_back(chat, responses):
    assert logic.chat_param(chat) == responses


# --- output --------------------------------------------------------------------------


def test_a_whole_response_fits_openais_schema():
    shaper = logic.Shaper(_req(metadata={"k": "v"}), [])
    result = GenerationResult([ChoiceDelta(0, "Hello", "stop")], 5, 2)
    body = shaper.from_result(result)
    validate("Response", body)
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "Hello"
    assert body["usage"]["total_tokens"] == 7 and body["metadata"] == {"k": "v"}


def test_max_output_tokens_makes_it_incomplete():
    body = logic.Shaper(_req(max_output_tokens=2), []).from_result(
        GenerationResult([ChoiceDelta(0, "ab", "length")], 3, 2)
    )
    validate("Response", body)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_tool_calls_are_function_call_items():
    req = _req(tools=[{"type": "function", "name": "f"}], tool_choice="required")
    shaper = logic.Shaper(req, logic.parse_tools(req.tools))
    call = ToolCall("call_1", "f", '{"a": 1}')
    body = shaper.from_result(
        GenerationResult([ChoiceDelta(0, "", "tool_calls", tool_calls=[call])], 3, 4)
    )
    validate("Response", body)
    assert [i["type"] for i in body["output"]] == ["function_call"]
    assert body["output"][0]["call_id"] == "call_1"


def test_the_event_stream_fits_openais_schemas_and_adds_up():
    events = logic.ResponseEvents(logic.Shaper(_req(stream=True), []))
    text = events.chunk(GenerationChunk([ChoiceDelta(0, "Hel")], 4, 1))
    text += events.chunk(GenerationChunk([ChoiceDelta(0, "lo", "stop")], 4, 2, finished=True))
    closing, final = events.done()
    parsed = _events(text + closing)
    for event in parsed:
        validate_event(event)
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    assert [e["type"] for e in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in parsed if e["type"] == "response.output_text.delta")
    assert deltas == "Hello" == parsed[6]["text"]
    assert parsed[-1]["response"] == final and final["usage"]["output_tokens"] == 2


def test_streamed_tool_calls_have_their_argument_events():
    req = _req(stream=True, tools=[{"type": "function", "name": "f"}], tool_choice="required")
    events = logic.ResponseEvents(logic.Shaper(req, logic.parse_tools(req.tools)))
    call = ToolCall("call_9", "f", "{}")
    text = events.chunk(
        GenerationChunk([ChoiceDelta(0, "", "tool_calls", tool_calls=[call])], 2, 3, finished=True)
    )
    closing, final = events.done()
    parsed = _events(text + closing)
    for event in parsed:
        validate_event(event)
    kinds = [e["type"] for e in parsed]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final["output"][0]["call_id"] == "call_9"


def test_a_failure_mid_stream_is_an_error_event_then_failed():
    events = logic.ResponseEvents(logic.Shaper(_req(stream=True), []))
    events.start()
    parsed = _events(events.failed(OpenAIError("gone", 503, code="model_unavailable")))
    for event in parsed:
        validate_event(event)
    assert [e["type"] for e in parsed] == ["error", "response.failed"]
    assert parsed[1]["response"]["error"]["code"] == "server_error"


def test_input_items_are_listed_in_openais_item_shape():
    items = logic.parse_items(
        [
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "1"},
        ]
    )
    resources = [logic.item_resource(i) for i in items]
    validate(
        "ResponseItemList",
        {
            "object": "list",
            "data": resources,
            "first_id": resources[0]["id"],
            "last_id": resources[-1]["id"],
            "has_more": False,
        },
    )
    # They parse back as input (a stored turn becomes the next turn's context).
    assert logic.chat_messages(logic.parse_items(resources), None)[0]["content"] == "q"


def test_metadata_is_bounded_and_a_long_key_is_not_echoed_whole():
    for metadata in ({"k" * 5000: "v"}, {"k": "v" * 513}, {f"k{i}": "v" for i in range(17)}):
        with pytest.raises(OpenAIError) as err:
            parse(CreateResponseRequest, {"model": "m", "input": "x", "metadata": metadata})
        assert err.value.status == 400 and err.value.param.startswith("metadata")
        assert len(err.value.param) < 100 and len(err.value.message) < 300
