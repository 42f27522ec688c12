"""The one place that builds OpenAI error bodies and picks their HTTP status.

Body: {"error": {"message", "type", "param", "code"}}, `code` a string or null (the
OpenAI schema's Error type), never the status number. A 5xx never carries internals:
the message names the request id and the traceback goes to the log.

Every error the API answers comes from here: the ones the ingress raises
(`OpenAIError`), the ones a model deployment reports (`from_info`, by the contract's
`ErrorKind`), failures of the hop to a replica (`serve_error`), and the bodies the
pure-ASGI guards send before any routing (`send_error`: 401, 431) or that routing
itself produces (`http_exception`: 404, 405).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from deployments.contract import ErrorInfo, ErrorKind

logger = logging.getLogger("ray.serve")

API_PREFIX = "/v1/openai"

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    503: "service_unavailable_error",
}

# A deployment says what went wrong; the status (and the code, when the deployment
# names none) is decided here.
_STATUS_BY_KIND: dict[ErrorKind, tuple[int, str | None]] = {
    "invalid_request": (400, None),
    "context_length": (400, "context_length_exceeded"),
    "not_found": (404, "not_found"),
    "unavailable": (503, "model_unavailable"),
    "overloaded": (429, "rate_limited"),
    "internal": (500, None),
}


class OpenAIError(Exception):
    """Raised anywhere in the ingress to answer with an OpenAI error."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers())

    def sse_event(self) -> str:
        """The in-band form, once a stream has started (status already sent)."""
        return f"data: {json.dumps(self.body())}\n\n"

    def response_code(self) -> str:
        """The Responses API's error code for this error (its ResponseErrorCode enum)."""
        if self.status == 429:
            return "rate_limit_exceeded"
        return "invalid_prompt" if self.status < 500 else "server_error"


def from_info(info: ErrorInfo) -> OpenAIError:
    """A model deployment's error value → the error the client gets."""
    status, default_code = _STATUS_BY_KIND.get(info.kind, (500, None))
    retry_after = 1.0 if status in (429, 503) else None
    return OpenAIError(
        info.message,
        status,
        param=info.param,
        code=info.code or default_code,
        retry_after=retry_after,
    )


def from_validation_error(exc: ValidationError, prefix: str = "") -> OpenAIError:
    """pydantic → 400 naming the first offending field (its path, not its value);
    `prefix` places a part parsed on its own (`input.2`) in the whole request."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    # Union members appear in the path as type names; drop them for a readable param.
    loc = [
        p
        for p in loc
        if p
        not in {
            "str",
            "int",
            "list[str]",
            "list[int]",
            "list[list[int]]",
            "list[TextPart]",
            "TextPart",
        }
        and not p.startswith(("list[", "literal["))
    ]
    # A dict key is part of the path: a client's long key is cut, never echoed whole.
    loc = [p if len(p) <= 64 else f"{p[:61]}..." for p in loc]
    param = ".".join([prefix, *loc] if prefix else loc) or None
    msg = first.get("msg", "invalid value")
    text = f"Invalid value for '{param}': {msg}" if param else f"Invalid request: {msg}"
    count = exc.error_count()
    if count > 1:
        text += f" (and {count - 1} more error{'s' if count > 2 else ''})"
    return OpenAIError(text, 400, param=param, code="invalid_value")


def internal_error(request_id: str, exc: BaseException) -> OpenAIError:
    """A 500 that names the request id; the traceback goes to the log only."""
    logger.error("request %s failed", request_id, exc_info=exc)
    return OpenAIError(
        f"Internal server error (request id {request_id}).", 500, type="server_error"
    )


def serve_error(exc: BaseException, request_id: str) -> OpenAIError:
    """Failures of the hop to a model replica, shaped so that clients (the openai SDK
    retries 429 and 5xx by itself) do the right thing; anything else is a 500."""
    from ray import exceptions as ray_exceptions
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, BackPressureError):
        return OpenAIError(
            "The model's queue is full. Retry after a short wait.",
            429,
            code="rate_limited",
            retry_after=1,
        )
    if isinstance(exc, (ray_exceptions.RayActorError, ray_exceptions.ActorUnavailableError)):
        logger.warning("request %s: model replica unavailable: %s", request_id, exc)
        return OpenAIError(
            f"The model replica became unavailable (request id {request_id}). Retry the request.",
            503,
            code="model_unavailable",
            retry_after=1,
        )
    return internal_error(request_id, exc)


def unauthorized() -> OpenAIError:
    return OpenAIError(
        "Missing or invalid API key. Send 'Authorization: Bearer <key>'.",
        401,
        code="invalid_api_key",
    )


def headers_too_large(max_count: int, max_bytes: int) -> OpenAIError:
    return OpenAIError(
        f"Request headers too large: at most {max_count} headers and {max_bytes} bytes in all.",
        431,
        code="request_header_fields_too_large",
    )


async def send_error(
    send: Send, error: OpenAIError, extra_headers: dict[str, str] | None = None
) -> None:
    """Sends `error` as a whole response from pure ASGI middleware (before routing)."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in {**error.headers(), **(extra_headers or {})}.items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's routing errors (no route, wrong method) as OpenAI errors."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    path = request.url.path
    if status == 404:
        error = OpenAIError(
            f"No route for {path}. The API lives under {API_PREFIX}/.", 404, code="not_found"
        )
    elif status == 405:
        error = OpenAIError(
            f"Method {request.method} is not allowed on {path}.", 405, code="method_not_allowed"
        )
    else:
        detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error."
        error = OpenAIError(str(detail), status)
    return error.response()
