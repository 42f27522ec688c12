"""POST /completions through the real app: prompts as the LLM deployment gets them, the whole answer and the stream."""

import pytest

from deployments.contract import ErrorInfo, GenerateRequest
from tests.ingress.fakes import (
    API,
    FakeApplication,
    app_details,
    error_of,
    make_stack,
    sse_events,
    standard_stack,
)

pytestmark = pytest.mark.anyio

URL = f"{API}/completions"


async def test_whole_answer_has_the_openai_shape():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/llm", "prompt": "Say hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == "org/llm" and isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "text": "Hello", "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


async def test_prompts_reach_the_deployment_as_a_list():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(
            URL,
            json={
                "model": "org/llm",
                "prompt": ["a", "b"],
                "n": 2,
                "echo": True,
                "logprobs": 2,
                "max_tokens": 7,
                "seed": 3,
            },
        )
    assert [c["index"] for c in response.json()["choices"]] == [0, 1, 2, 3]
    payload: GenerateRequest = stack.serve.apps["llm-1"].calls[0].payload
    assert payload.task == "completion" and payload.prompts == ["a", "b"]
    assert (payload.echo, payload.logprobs) == (True, 2)
    assert (payload.sampling.n, payload.sampling.max_tokens, payload.sampling.seed) == (2, 7, 3)


async def test_token_prompt_is_one_prompt():
    stack = standard_stack()
    async with stack.client() as client:
        await client.post(URL, json={"model": "org/llm", "prompt": [1, 2, 3]})
    assert stack.serve.apps["llm-1"].calls[0].payload.prompts == [[1, 2, 3]]


async def test_stream_text_then_finish_with_usage_then_done():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(
            URL,
            json={
                "model": "org/llm",
                "prompt": "x",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Hello"
    finish = chunks[-2]
    # Asked for OpenAI's usage chunk: usage is there only, not on the finish chunk.
    assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 10
    assert stack.inflight("llm-1") == 0


async def test_suffix_is_refused():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/llm", "prompt": "a", "suffix": "z"})
    assert error_of(response, 400)["param"] == "suffix"


async def test_deployment_error_is_its_status():
    info = ErrorInfo("Token id 99999 is out of vocabulary.", kind="invalid_request", param="prompt")
    stack = make_stack(
        {"llm-1": app_details("org/llm")},
        {"llm-1": FakeApplication(unary={"complete": lambda _: info})},
    )
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/llm", "prompt": [99999]})
    error = error_of(response, 400)
    assert error == {
        "message": "Token id 99999 is out of vocabulary.",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": None,
    }
