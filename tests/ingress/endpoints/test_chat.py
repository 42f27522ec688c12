"""POST /chat/completions through the real app: the request the LLM deployment gets, the whole JSON answer, and the SSE stream."""

import pytest
from ray.serve.exceptions import BackPressureError

from deployments.contract import (
    ChoiceDelta,
    ErrorInfo,
    GenerateRequest,
    GenerationChunk,
    GenerationResult,
    ToolCall,
)
from tests.ingress.fakes import (
    API,
    FakeApplication,
    app_details,
    error_of,
    make_stack,
    sse_events,
    standard_stack,
)
from tests.openapi import validate

pytestmark = pytest.mark.anyio

URL = f"{API}/chat/completions"
CHAT = {
    "model": "org/llm",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
}


async def test_whole_answer_has_the_openai_shape():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion" and isinstance(body["created"], int)
    assert body["model"] == "org/llm"
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": "Hello",
                "refusal": None,
            },
        }
    ]
    validate("CreateChatCompletionResponse", body)  # tool_calls absent, not null
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert stack.inflight("llm-1") == 0


async def test_the_deployment_gets_a_converted_generate_request():
    stack = standard_stack()
    async with stack.client({"x-request-id": "client-7"}) as client:
        await client.post(
            URL,
            json={
                **CHAT,
                "n": 2,
                "max_completion_tokens": 9,
                "temperature": 0.5,
                "stop": "END",
                "messages": [
                    {"role": "developer", "content": "x"},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                ],
            },
        )
    (call,) = stack.serve.apps["llm-1"].calls
    payload: GenerateRequest = call.payload
    assert (call.method, call.stream) == ("complete", False)
    assert payload.task == "chat" and payload.request_id.startswith("client-7-")
    assert payload.messages == [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "ab"},
    ]
    assert (
        payload.sampling.n,
        payload.sampling.max_tokens,
        payload.sampling.temperature,
        payload.sampling.stop,
    ) == (2, 9, 0.5, ["END"])


async def test_model_string_is_echoed_as_sent():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "model": "org/llm:1"})
    assert response.json()["model"] == "org/llm:1"


async def test_tool_calls_leave_content_null():
    result = GenerationResult(
        choices=[
            ChoiceDelta(
                index=0,
                text="",
                finish_reason="tool_calls",
                tool_calls=[
                    ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
                ],
            )
        ],
        prompt_tokens=9,
        completion_tokens=4,
    )
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(unary={"complete": lambda _: result})},
    )
    async with stack.client() as client:
        response = await client.post(URL, json=CHAT)
    message = response.json()["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]


async def test_stream_role_content_finish_with_usage_then_done():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "org/llm" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:-1])
    assert text == "Hello"
    assert all("usage" not in c for c in chunks[:-1])
    finish = chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["delta"] == {}
    assert finish["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert stack.inflight("llm-1") == 0
    (call,) = stack.serve.apps["llm-1"].calls
    assert (call.method, call.stream) == ("generate", True)


async def test_stream_include_usage_adds_a_choiceless_chunk_before_done():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(
            URL, json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["object"] == "chat.completion.chunk"
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert usage_chunk["id"] == events[0]["id"]


async def test_stream_tool_call_delta():
    items = [
        GenerationChunk(
            deltas=[
                ChoiceDelta(
                    index=0,
                    text="",
                    finish_reason="tool_calls",
                    tool_calls=[ToolCall(id="call_1", name="f", arguments="{}")],
                )
            ],
            prompt_tokens=3,
            completion_tokens=2,
            finished=True,
        )
    ]
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(streams={"generate": lambda _: items})},
    )
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "stream": True})
    deltas = [e["choices"][0]["delta"] for e in sse_events(response.text)[:-1]]
    assert {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": "{}"},
            }
        ]
    } in deltas


async def test_stream_rejected_before_output_is_a_json_status_not_sse():
    info = ErrorInfo(
        "This model's maximum context length is 16 tokens.", kind="context_length", param="messages"
    )
    app = FakeApplication(streams={"generate": lambda _: [info]})
    stack = make_stack({"llm-1": app_details("org/llm")}, {"llm-1": app})
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "stream": True})
    error = error_of(response, 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert app.last.cancelled and stack.inflight("llm-1") == 0


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "org/llm", "messages": []}, "messages"),
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({**CHAT, "messages": [{"role": "user"}]}, "messages.0"),
    ],
)
async def test_invalid_request_is_400_naming_the_field(body, param):
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json=body)
    error = error_of(response, 400)
    assert error["param"] == param and error["code"] == "invalid_value"
    assert stack.serve.apps["llm-1"].calls == []


async def test_embeddings_model_cannot_chat():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "model": "org/emb"})
    assert error_of(response, 400)["code"] == "model_task_mismatch"


async def test_stream_refused_by_a_full_queue_is_a_json_429():
    full = BackPressureError(num_queued_requests=3, max_queued_requests=3)
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(streams={"generate": lambda _: [full]})},
    )
    async with stack.client() as client:
        response = await client.post(URL, json={**CHAT, "stream": True})
    assert error_of(response, 429)["code"] == "rate_limited"
    assert stack.inflight("llm-1") == 0
