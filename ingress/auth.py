"""API keys: `Authorization: Bearer <key>` on every /v1/openai route (and on
/metrics when `auth.protect_metrics` is set).

Keys are never stored or compared in plain text: each configured key is kept as
its SHA-256 digest, and a presented key is hashed and compared against every
digest with `hmac.compare_digest`, so the time taken says nothing about how close a
guess was or which key matched. Keys come from an environment variable (plain keys,
comma-separated, for secrets injected by the platform) and/or a file of SHA-256 hex
digests (one per line); never from serve_config.yaml.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

from ingress.config import AuthConfig

API_PREFIX = "/v1/openai"
METRICS_PATH = "/metrics"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    def __init__(self, digests: list[bytes]) -> None:
        self._digests = list(digests)

    @classmethod
    def from_config(cls, config: AuthConfig) -> "ApiKeys":
        """Raises ValueError when auth is on but no key is configured, so a
        misconfigured ingress fails its deploy instead of serving everyone."""
        digests = []
        plain = os.environ.get(config.api_keys_env, "") if config.api_keys_env else ""
        digests += [digest(k.strip()) for k in plain.split(",") if k.strip()]
        if config.api_key_hashes_file:
            for line in Path(config.api_key_hashes_file).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    digests.append(bytes.fromhex(line))
        if not digests:
            raise ValueError(
                f"auth is enabled but no API key is configured: set the environment "
                f"variable {config.api_keys_env} or auth.api_key_hashes_file, or set "
                f"auth.enabled: false explicitly")
        return cls(digests)

    def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        candidate = digest(presented)
        ok = False
        for known in self._digests:  # no early exit: same work whichever key matches
            ok |= hmac.compare_digest(candidate, known)
        return ok


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Pure ASGI: rejects unauthenticated /v1/openai requests before any parsing."""

    def __init__(self, app: Callable[..., Awaitable[None]], keys: ApiKeys,
                 protect_metrics: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.protected = (API_PREFIX, METRICS_PATH) if protect_metrics else (API_PREFIX,)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["type"] != "http" or not path.startswith(self.protected) \
                or self.keys.check(_bearer(scope)):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {
            "message": "Missing or invalid API key. Send 'Authorization: Bearer <key>'.",
            "type": "authentication_error", "param": None, "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
