"""Every error the API answers has the OpenAI shape {message, type, param, code} (code a string or null), the right status, and no internals in a 5xx."""

import json
from typing import Any

import pytest
from pydantic import ValidationError
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from deployments.contract import ErrorInfo
from ingress.errors import (
    OpenAIError,
    from_info,
    from_validation_error,
    headers_too_large,
    send_error,
    serve_error,
    unauthorized,
)
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.completions import CompletionRequest
from ingress.wire.embeddings import EmbeddingRequest
from tests.ingress.fakes import API, check_error_body, error_of, standard_stack

MESSAGES = [{"role": "user", "content": "hi"}]


def _validation_error(model: Any, data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value


# --- from_validation_error -------------------------------------------------------------


def test_param_is_the_field_path_not_the_value():
    exc = _validation_error(
        ChatCompletionRequest, {"model": "m", "messages": MESSAGES, "temperature": 7.25}
    )
    err = from_validation_error(exc)
    assert (err.status, err.param, err.code, err.type) == (
        400,
        "temperature",
        "invalid_value",
        "invalid_request_error",
    )
    assert "7.25" not in err.message
    assert err.message == "Invalid value for 'temperature': Input should be less than or equal to 2"


def test_nested_path_is_dotted():
    exc = _validation_error(
        ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "robot"}]},
    )
    assert from_validation_error(exc).param == "messages.1.role"


@pytest.mark.parametrize(
    "model, data, param",
    [
        (
            ChatCompletionRequest,
            {"model": "m", "messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
        ),
        (ChatCompletionRequest, {"model": "m", "messages": MESSAGES, "stop": 5}, "stop"),
        (
            ChatCompletionRequest,
            {"model": "m", "messages": MESSAGES, "tool_choice": 5},
            "tool_choice",
        ),
        (CompletionRequest, {"model": "m", "prompt": 5}, "prompt"),
        (EmbeddingRequest, {"model": "m", "input": 5}, "input"),
    ],
)
def test_union_member_names_are_stripped_from_param(model, data, param):
    exc = _validation_error(model, data)
    assert any(len(e["loc"]) > len(param.split(".")) for e in exc.errors())  # pydantic's path
    err = from_validation_error(exc)
    assert err.param == param
    for member in ("str", "list[", "literal[", "TextPart"):
        assert f"'{param}.{member}" not in err.message


def test_more_errors_are_counted():
    one_more = _validation_error(
        ChatCompletionRequest, {"model": "m", "messages": MESSAGES, "temperature": 9, "top_p": 9}
    )
    assert from_validation_error(one_more).message.endswith(" (and 1 more error)")
    three_more = _validation_error(
        ChatCompletionRequest,
        {
            "model": "m",
            "messages": MESSAGES,
            "temperature": 9,
            "top_p": 9,
            "n": 0,
            "presence_penalty": 9,
        },
    )
    assert from_validation_error(three_more).message.endswith(" (and 3 more errors)")
    single = _validation_error(ChatCompletionRequest, {"messages": MESSAGES})
    assert "more error" not in from_validation_error(single).message
    assert from_validation_error(single).param == "model"


def test_model_level_error_has_no_param():
    exc = _validation_error(
        ChatCompletionRequest, {"model": "m", "messages": MESSAGES, "top_logprobs": 2}
    )
    err = from_validation_error(exc)
    assert err.param is None and err.message.startswith("Invalid request: ")
    assert "top_logprobs needs logprobs" in err.message


# --- from_info ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, status, error_type, code, retry_after",
    [
        ("invalid_request", 400, "invalid_request_error", None, None),
        ("context_length", 400, "invalid_request_error", "context_length_exceeded", None),
        ("not_found", 404, "not_found_error", "not_found", None),
        ("unavailable", 503, "service_unavailable_error", "model_unavailable", "1"),
        ("overloaded", 429, "rate_limit_error", "rate_limited", "1"),
        ("internal", 500, "server_error", None, None),
    ],
)
def test_from_info_maps_each_kind(kind, status, error_type, code, retry_after):
    err = from_info(ErrorInfo("msg", kind=kind, param="p"))
    assert (err.status, err.type, err.code, err.param) == (status, error_type, code, "p")
    assert err.headers().get("Retry-After") == retry_after
    body = check_error_body(err.body())
    assert body == {"message": "msg", "type": error_type, "param": "p", "code": code}
    response = err.response()
    assert response.status_code == status
    assert json.loads(response.body) == {"error": body}


def test_from_info_keeps_the_deployments_code():
    assert from_info(ErrorInfo("m", kind="invalid_request", code="bad_size")).code == "bad_size"


def test_sse_event_is_one_data_frame():
    event = from_info(ErrorInfo("boom", kind="internal")).sse_event()
    assert event.startswith("data: ") and event.endswith("\n\n") and event.count("\n\n") == 1
    check_error_body(json.loads(event[len("data: ") :]))


# --- serve_error ---------------------------------------------------------------------------


def test_back_pressure_is_429():
    err = serve_error(BackPressureError(num_queued_requests=5, max_queued_requests=5), "R")
    assert (err.status, err.code, err.type) == (429, "rate_limited", "rate_limit_error")
    assert err.headers() == {"Retry-After": "1"}


@pytest.mark.parametrize(
    "exc",
    [RayActorError(), ActorUnavailableError("gone", None)],
    ids=["RayActorError", "ActorUnavailableError"],
)
def test_replica_gone_is_503(exc):
    err = serve_error(exc, "R")
    assert (err.status, err.code) == (503, "model_unavailable")
    assert "R" in err.message and err.headers() == {"Retry-After": "1"}


def test_anything_else_is_500_naming_the_request_id_only():
    secret = "KeyError('/home/svc/.cache/weights.bin') at 0x7f00"
    err = serve_error(RuntimeError(secret), "R")
    body = check_error_body(err.body())
    assert err.status == 500
    assert body == {
        "message": "Internal server error (request id R).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert err.headers() == {}


def test_openai_error_passes_through():
    original = OpenAIError("nope", 404, code="model_not_found")
    assert serve_error(original, "R") is original


def test_status_picks_the_type():
    assert OpenAIError("x", 401).type == "authentication_error"
    assert OpenAIError("x", 413).type == "invalid_request_error"
    assert OpenAIError("x", 502).type == "server_error"
    assert OpenAIError("x", 400, type="custom").type == "custom"


# --- send_error (pure ASGI guards) ----------------------------------------------------------


async def _sent(
    error: OpenAIError, extra: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await send_error(send, error, extra)
    start, body = messages
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert int(headers["content-length"]) == len(body["body"])
    return start["status"], headers, json.loads(body["body"])


@pytest.mark.anyio
async def test_send_error_401_says_bearer():
    status, headers, body = await _sent(unauthorized(), {"WWW-Authenticate": "Bearer"})
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/json"
    error = check_error_body(body)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


@pytest.mark.anyio
async def test_send_error_431():
    status, _, body = await _sent(headers_too_large(100, 32768))
    assert status == 431
    error = check_error_body(body)
    assert error["code"] == "request_header_fields_too_large"
    assert "100 headers" in error["message"] and "32768 bytes" in error["message"]


@pytest.mark.anyio
async def test_send_error_carries_retry_after():
    _, headers, _ = await _sent(OpenAIError("slow down", 429, retry_after=2.6))
    assert headers["retry-after"] == "3"


# --- routing errors through the app ---------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_route_is_an_openai_404():
    async with standard_stack().client() as client:
        response = await client.get("/v2/chat")
    error = error_of(response, 404)
    assert (error["type"], error["code"]) == ("not_found_error", "not_found")
    assert API in error["message"]


@pytest.mark.anyio
async def test_wrong_method_is_an_openai_405():
    async with standard_stack().client() as client:
        response = await client.get(f"{API}/chat/completions")
    error = error_of(response, 405)
    assert (error["type"], error["code"]) == ("invalid_request_error", "method_not_allowed")
    assert "GET" in error["message"]
