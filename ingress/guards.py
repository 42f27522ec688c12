"""Pure ASGI guard for request headers: Serve's HTTP proxy accepts very large header
sets (a 200 KB header passed through in a test), so the ingress bounds them itself,
before any parsing, with a shaped 431. The client's `x-request-id` travels into engine
request ids and every log line, so it is held to a short, printable form (400).

Serve's proxy also takes two per-request hints from any client: `x-request-timeout-seconds`
(0 switches the configured request_timeout_s off) and `x-request-disconnect-disabled: ?1`
(a client that hangs up no longer cancels its request). Both would let a client leave
work running for nobody, and the proxy has applied them before this runs, so a request
carrying them is refused (400) before it reaches a model."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from ingress.errors import OpenAIError, headers_too_large, send_error

MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,%d}" % MAX_REQUEST_ID_CHARS)
# Serve's per-request overrides of its timeout and disconnect handling
# (ray/serve/_private/http_util.py parse_request_timeout_header and
# parse_disconnect_disabled_header).
SERVE_OVERRIDE_HEADERS = (b"x-request-timeout-seconds", b"x-request-disconnect-disabled")


def bad_request_id() -> OpenAIError:
    return OpenAIError(
        f"x-request-id must be 1 to {MAX_REQUEST_ID_CHARS} characters of letters, digits "
        "and . _ : / + = @ -.",
        400,
        param="x-request-id",
        code="invalid_request_id",
    )


def serve_override_header(name: bytes) -> OpenAIError:
    return OpenAIError(
        f"The {name.decode()} header is not accepted: requests are bounded by the "
        "server's timeout and cancelled when the client disconnects. Remove the header.",
        400,
        param=name.decode(),
        code="unsupported_header",
    )


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = (scope.get("headers") or []) if scope["type"] == "http" else []
        size = sum(len(k) + len(v) for k, v in headers)
        if len(headers) > self.max_count or size > self.max_bytes:
            await send_error(send, headers_too_large(self.max_count, self.max_bytes))
            return
        for name, value in headers:
            if name == b"x-request-id" and not _REQUEST_ID.fullmatch(value):
                await send_error(send, bad_request_id())
                return
            if name in SERVE_OVERRIDE_HEADERS:
                await send_error(send, serve_override_header(name))
                return
        await self.app(scope, receive, send)
