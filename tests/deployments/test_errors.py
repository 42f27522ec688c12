"""Engine exceptions map to the caller's errors (message, param) or ours (request id only)."""

from __future__ import annotations

import logging

import pytest
from jinja2 import TemplateError

from deployments.contract import ErrorInfo
from deployments.errors import (
    InvalidInput,
    PromptTooLong,
    client_error,
    engine_error,
    internal_error,
    planning_error,
)
from tests.fakes import FakeClientError

SECRET = "at 0x7f3a /opt/engine/core.py"


def _is_fake_client_error(exc: BaseException) -> bool:
    return isinstance(exc, FakeClientError)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def serve_log():
    """What the mapper logs to "ray.serve" (Ray may stop it from reaching the root)."""
    handler, logger = _Records(), logging.getLogger("ray.serve")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def test_internal_error_names_the_request_and_logs_the_traceback(serve_log):
    try:
        raise RuntimeError(SECRET)
    except RuntimeError as exc:
        error = internal_error("req-9", exc)
    assert error == ErrorInfo("Internal server error (request id req-9).", kind="internal")
    [record] = serve_log
    assert "req-9" in record.getMessage() and record.exc_info[1].args == (SECRET,)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (
            FakeClientError("n must be at most 8", parameter="n"),
            ErrorInfo("n must be at most 8", param="n"),
        ),
        (
            PromptTooLong("too long"),
            ErrorInfo("too long", kind="context_length", code="context_length_exceeded"),
        ),
        (RuntimeError(SECRET), None),
        (ValueError(SECRET), None),  # mid-stream, only the engine's own client errors count
        (KeyError(SECRET), None),
    ],
)
def test_engine_error(exc, expected, serve_log):
    error = engine_error(exc, "r", is_client_error=_is_fake_client_error)
    if expected is None:
        assert error.kind == "internal" and SECRET not in error.message and serve_log
    else:
        assert error == expected and not serve_log


class _ClientRuntimeError(FakeClientError, RuntimeError):
    """An engine "client" error that is also a RuntimeError: still ours."""


@pytest.mark.parametrize(
    "exc, kind, param",
    [
        (ValueError("bad schema"), "invalid_request", None),
        (InvalidInput("bad id", parameter="prompt"), "invalid_request", "prompt"),
        (
            FakeClientError("bad temperature", parameter="temperature"),
            "invalid_request",
            "temperature",
        ),
        (TemplateError("roles must alternate"), "invalid_request", "messages"),
        (PromptTooLong("4000 tokens"), "context_length", "messages"),
        (TypeError(SECRET), "internal", None),
        (RuntimeError(SECRET), "internal", None),
        (_ClientRuntimeError(SECRET), "internal", None),
        (AttributeError(SECRET), "internal", None),
    ],
)
def test_planning_error(exc, kind, param, serve_log):
    error = planning_error(exc, "r", is_client_error=_is_fake_client_error, prompt_param="messages")
    assert (error.kind, error.param) == (kind, param)
    if kind == "internal":
        assert SECRET not in error.message and "request id r" in error.message
    else:
        assert str(exc) in error.message and not serve_log
    if kind == "context_length":
        assert error.code == "context_length_exceeded"


def test_client_error_prefers_the_exceptions_own_param():
    assert client_error(InvalidInput("x", parameter="tool_choice"), param="messages").param == (
        "tool_choice"
    )
    assert client_error(ValueError("x"), param="messages", prefix="Invalid request: ") == (
        ErrorInfo("Invalid request: x", param="messages")
    )
