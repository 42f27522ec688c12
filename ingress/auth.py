"""API keys: `Authorization: Bearer <key>` on every /v1/openai route and on
/metrics (unless `auth.protect_metrics` is switched off); /health never.

Keys are never stored or compared in plain text: each configured key is kept as
its SHA-256 digest, and a presented key is hashed and compared against every
digest with `hmac.compare_digest`, so the time taken says nothing about how close a
guess was or which key matched. Keys come from an environment variable (plain keys,
comma-separated, for secrets injected by the platform) and/or a file of SHA-256 hex
digests (one per line); never from serve_config.yaml.

A request that passes carries its key's id (`key_id`: the first 8 hex characters of
the key's SHA-256, never the key) in its ASGI scope's `state`, for the per-key
limit and counters (ingress/forward.py, ingress/metrics.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ingress.config import AuthConfig
from ingress.errors import API_PREFIX, send_error, unauthorized

METRICS_PATH = "/metrics"
API_KEY_ID = "api_key_id"  # the key in scope["state"] (Starlette's request.state)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(key_digest: bytes) -> str:
    """The name a key goes by in metrics and limits: the first 8 hex characters of
    its SHA-256 (`printf %s "$KEY" | sha256sum | cut -c1-8`), which the hash file
    already holds and which says nothing usable about the key."""
    return key_digest.hex()[:8]


def api_key_id(scope: Scope) -> str | None:
    """The id of the key the request was let in with; None when auth is off."""
    state = scope.get("state") or {}
    found = state.get(API_KEY_ID)
    return found if isinstance(found, str) else None


class ApiKeys:
    def __init__(self, digests: list[bytes]) -> None:
        self._digests = list(digests)

    @classmethod
    def from_config(cls, config: AuthConfig) -> ApiKeys:
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
                f"auth.enabled: false explicitly"
            )
        return cls(digests)

    def match(self, presented: str | None) -> str | None:
        """The `key_id` of the configured key `presented` is, or None."""
        if not presented:
            return None
        candidate = digest(presented)
        found: bytes | None = None
        for known in self._digests:  # no early exit: same work whichever key matches
            if hmac.compare_digest(candidate, known):
                found = known
        return None if found is None else key_id(found)

    def check(self, presented: str | None) -> bool:
        return self.match(presented) is not None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Pure ASGI: rejects unauthenticated /v1/openai (and /metrics) requests before
    any parsing, and tells the rest of the app which key let a request in."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, protect_metrics: bool = True) -> None:
        self.app = app
        self.keys = keys
        self.protected = (API_PREFIX, METRICS_PATH) if protect_metrics else (API_PREFIX,)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope["type"] != "http" or not path.startswith(self.protected):
            await self.app(scope, receive, send)
            return
        key = self.keys.match(_bearer(scope))
        if key is None:
            await send_error(send, unauthorized(), {"WWW-Authenticate": "Bearer"})
            return
        # A new scope and state dict: the server may share one `state` between
        # requests (lifespan state), so this request's key must not be written there.
        state = {**(scope.get("state") or {}), API_KEY_ID: key}
        await self.app({**scope, "state": state}, receive, send)
