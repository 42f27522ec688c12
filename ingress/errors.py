"""The one place that builds OpenAI error bodies and picks their HTTP status.

Body: {"error": {"message", "type", "param", "code"}}, `code` a string or null (the
OpenAI schema's Error type), never the status number. A 5xx never carries internals:
the message names the request id and the traceback goes to the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from deployments.contract import ErrorInfo

logger = logging.getLogger("ray.serve")

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
    503: "service_unavailable_error",
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

    @classmethod
    def from_info(cls, info: ErrorInfo) -> "OpenAIError":
        return cls(info.message, info.status, param=info.param, code=info.code,
                   type=info.type)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(round(self.retry_after))))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def sse_event(self) -> str:
        """The in-band form, once a stream has started (status already sent)."""
        return f"data: {json.dumps(self.body())}\n\n"


def from_validation_error(exc: ValidationError) -> OpenAIError:
    """pydantic → 400 naming the first offending field (its path, not its value)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    # Union members appear in the path as type names; drop them for a readable param.
    loc = [p for p in loc if p not in {"str", "int", "list[str]", "list[int]",
                                       "list[list[int]]", "list[TextPart]", "TextPart"}
           and not p.startswith(("list[", "literal["))]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    text = f"Invalid value for '{param}': {msg}" if param else f"Invalid request: {msg}"
    count = exc.error_count()
    if count > 1:
        text += f" (and {count - 1} more error{'s' if count > 2 else ''})"
    return OpenAIError(text, 400, param=param, code="invalid_value")


def internal_error(request_id: str, exc: BaseException) -> OpenAIError:
    logger.error("request %s failed", request_id, exc_info=exc)
    return OpenAIError(f"Internal server error (request id {request_id}).", 500,
                       type="server_error")


def serve_error(exc: BaseException, request_id: str) -> OpenAIError:
    """Failures of the hop to a model replica, shaped so that clients (the openai SDK
    retries 429 and 5xx by itself) do the right thing; anything else is a 500."""
    from ray import exceptions as ray_exceptions
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError):
        return OpenAIError("The model's queue is full. Retry after a short wait.", 429,
                           code="rate_limited", retry_after=1)
    if isinstance(exc, (ray_exceptions.RayActorError, ray_exceptions.ActorUnavailableError)):
        logger.warning("request %s: model replica unavailable: %s", request_id, exc)
        return OpenAIError(f"The model replica became unavailable (request id "
                           f"{request_id}). Retry the request.", 503,
                           code="model_unavailable", retry_after=1)
    return internal_error(request_id, exc)
