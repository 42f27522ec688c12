"""Pure ASGI guard for request headers: Serve's HTTP proxy accepts very large header
sets (a 200 KB header passed through in a test), so the ingress bounds them itself,
before any parsing, with a shaped 431."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable


class HeaderLimitMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, max_count: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = (scope.get("headers") or []) if scope["type"] == "http" else []
        size = sum(len(k) + len(v) for k, v in headers)
        if len(headers) <= self.max_count and size <= self.max_bytes:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {
            "message": f"Request headers too large: at most {self.max_count} headers and "
                       f"{self.max_bytes} bytes in all.",
            "type": "invalid_request_error", "param": None,
            "code": "request_header_fields_too_large"}}).encode()
        await send({"type": "http.response.start", "status": 431, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
