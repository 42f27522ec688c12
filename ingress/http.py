"""What every endpoint does with the HTTP request before its own logic: request ids,
reading the body as bounded JSON, and parsing it into a wire type.

Kept apart from the endpoints and the app so that both can import it (no cycle).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ingress.errors import OpenAIError, from_validation_error
from ingress.wire.common import new_id

W = TypeVar("W", bound=BaseModel)
_JSON_TYPES = {"application/json", "text/json"}
# A surrogate escape in the raw body: only then is the whole-body check worth it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def request_id_of(request: Request) -> str:
    """Serve's proxy honours a client's `x-request-id` or makes one, puts it in the
    request headers and returns it in the response; it also tags Serve's logs."""
    return request.headers.get("x-request-id") or new_id("req")


def engine_request_id(request: Request) -> str:
    """A unique id for the engine: clients may reuse an x-request-id."""
    return f"{request_id_of(request)}-{uuid.uuid4().hex[:8]}"


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        OpenAIError: 415 for another content type, 413 past `limit` bytes (declared or
            streamed), 400 for a body that is not a JSON object.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise OpenAIError(
            f"Content-Type must be application/json, not {ctype!r}.",
            415,
            code="unsupported_media_type",
        )
    too_large = OpenAIError(
        f"Request body is larger than {limit} bytes.", 413, code="request_too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise OpenAIError(
            "The body is not valid JSON. Send a JSON object.", 400, code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError("The body must be a JSON object.", 400, code="invalid_json")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(data):
        raise OpenAIError(
            "The body holds a lone UTF-16 surrogate escape (e.g. \\ud800 without its "
            "pair), which is not text. Send valid Unicode.",
            400,
            code="invalid_unicode",
        )
    return data


def _has_lone_surrogate(data: dict[str, Any]) -> bool:
    """JSON may escape half a surrogate pair; Python then holds a str that no UTF-8
    encoder (a tokenizer, a log line) can write. One C-speed pass finds it."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse(model: type[W], data: dict[str, Any]) -> W:
    """`data` as the wire type `model`.

    Raises:
        OpenAIError: 400 naming the first offending field.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise OpenAIError("The body is nested too deeply.", 400) from None


async def read_request(request: Request, model: type[W], limit: int) -> W:
    """read_json then parse: the first two steps of every POST endpoint."""
    return parse(model, await read_json(request, limit))
