"""Reading a request body as bounded JSON and parsing it into a wire type: each way a body can be wrong is a 4xx, never a 500."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request

from ingress.bounds import RequestBounds, check_chat
from ingress.errors import OpenAIError
from ingress.http import engine_request_id, parse, read_json, read_request, request_id_of
from ingress.wire.chat import ChatCompletionRequest
from tests.ingress.fakes import API, error_of, standard_stack

pytestmark = pytest.mark.anyio


class Body:
    """An ASGI `receive` that delivers `parts` as the request body and counts reads."""

    def __init__(self, parts: list[bytes]) -> None:
        self.pending = list(parts)
        self.reads = 0

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.pending:
            part = self.pending.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(self.pending)}
        return {"type": "http.disconnect"}


def _request(parts: list[bytes] | Body, headers: dict[str, str] | None = None) -> Request:
    receive = parts if isinstance(parts, Body) else Body(parts)
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw}, receive)


async def _error(request: Request, limit: int = 1000) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        await read_json(request, limit)
    return caught.value


@pytest.mark.parametrize(
    "ctype",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/json", None],
)
async def test_json_content_types_are_read(ctype):
    headers = {"content-type": ctype} if ctype else {}
    assert await read_json(_request([b'{"a": 1}'], headers), 100) == {"a": 1}


async def test_other_content_type_is_415():
    err = await _error(_request([b'{"a": 1}'], {"content-type": "text/plain"}))
    assert (err.status, err.code) == (415, "unsupported_media_type")
    assert "text/plain" in err.message


async def test_declared_oversize_is_413_before_reading():
    body = Body([b"{}"])
    err = await _error(_request(body, {"content-length": "1001"}))
    assert (err.status, err.code) == (413, "request_too_large")
    assert body.reads == 0


async def test_streamed_oversize_without_content_length_is_413():
    err = await _error(_request([b"[" * 400, b"1" * 400, b"]" * 400]))
    assert (err.status, err.code) == (413, "request_too_large")
    assert "1000 bytes" in err.message


async def test_body_of_exactly_the_limit_is_read():
    body = b'{"a": "' + b"x" * 91 + b'"}'
    assert len(body) == 100
    assert await read_json(_request([body], {"content-length": "100"}), 100) == {"a": "x" * 91}


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe{}", b'{"a": 1} trailing'])
async def test_invalid_json_is_400(body):
    err = await _error(_request([body]))
    assert (err.status, err.code) == (400, "invalid_json")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"3"])
async def test_non_object_is_400(body):
    err = await _error(_request([body]))
    assert (err.status, err.code) == (400, "invalid_json")
    assert "JSON object" in err.message


async def test_nesting_too_deep_for_the_json_parser_is_400():
    body = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    err = await _error(_request([body]), limit=len(body))
    assert (err.status, err.code) == (400, "invalid_json")


async def test_nesting_too_deep_for_validation_is_400():
    # Parsing takes the schema as data; its depth is a schema budget (ingress/schemas.py).
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(600):
        schema = {"type": "object", "properties": {"a": schema}}
    data = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }
    with pytest.raises(OpenAIError) as caught:
        await check_chat(RequestBounds(), parse(ChatCompletionRequest, data))
    assert caught.value.status == 400


def test_parse_returns_the_wire_type():
    req = parse(
        ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert isinstance(req, ChatCompletionRequest) and req.model == "m"


def test_parse_names_the_field():
    with pytest.raises(OpenAIError) as caught:
        parse(ChatCompletionRequest, {"model": "m", "messages": []})
    assert (caught.value.status, caught.value.param) == (400, "messages")


async def test_read_request_reads_then_parses():
    req = await read_request(
        _request([b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}']),
        ChatCompletionRequest,
        1000,
    )
    assert req.messages[0].content == "hi"


def test_request_ids():
    honoured = Request({"type": "http", "headers": [(b"x-request-id", b"abc")]})
    assert request_id_of(honoured) == "abc"
    made = Request({"type": "http", "headers": []})
    assert request_id_of(made).startswith("req-")
    one, two = engine_request_id(honoured), engine_request_id(honoured)
    assert one.startswith("abc-") and two.startswith("abc-") and one != two


# --- the same through the app ---------------------------------------------------------------


async def test_app_answers_413_for_a_chunked_body_without_content_length():
    stack = standard_stack(config={"max_body_bytes": 1024})

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    async with stack.client() as client:
        response = await client.post(
            f"{API}/chat/completions", content=body(), headers={"content-type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert error_of(response, 413)["code"] == "request_too_large"


async def test_app_answers_400_not_500_for_a_deeply_nested_body():
    stack = standard_stack()
    body = '{"model": "org/llm", "messages": ' + "[" * 50_000 + "]" * 50_000 + "}"
    async with stack.client() as client:
        response = await client.post(
            f"{API}/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert error_of(response, 400)["code"] == "invalid_json"


async def test_app_answers_415_for_form_data():
    async with standard_stack().client() as client:
        response = await client.post(f"{API}/embeddings", data={"model": "org/emb"})
    assert error_of(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "raw", [b'{"prompt": "a\\ud800b"}', b'{"prompt": "\\udc00"}', b'{"m": ["\\uD83D"]}']
)
async def test_lone_surrogate_escape_is_400(raw):
    with pytest.raises(OpenAIError) as caught:
        await read_json(_request([raw]), 1 << 20)
    assert (caught.value.status, caught.value.code) == (400, "invalid_unicode")


async def test_surrogate_pair_escape_is_text():
    data = await read_json(_request([b'{"prompt": "\\ud83d\\ude00"}']), 1 << 20)
    assert data == {"prompt": "\U0001f600"}
