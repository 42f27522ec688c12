"""Concurrency limits, enforced in the ingress before the handle hop.

DeepInfra caps each model at 200 concurrent requests; ours is per application
(`max_concurrent_requests` in its config, published in its model card). Counted per
ingress replica: with R ingress replicas a model sees at most R x limit, and
Serve's `max_queued_requests` bounds what reaches the model's replicas. The same
counter, keyed by API key id, is the optional per-key limit
(`auth.max_concurrent_requests_per_key`).
"""

from __future__ import annotations

from ingress.errors import OpenAIError


class ConcurrencyLimiter:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}

    def inflight(self, key: str) -> int:
        return self._inflight.get(key, 0)

    def acquire(self, key: str, limit: int, what: str) -> Slot:
        """Counts one request against `key` (a deploy_id, or an API key id).

        Args:
            key: what is counted.
            limit: the most requests `key` may have in flight.
            what: how the 429's message names it ("'MODEL'", "this API key").

        Raises:
            OpenAIError: 429 rate_limited (Retry-After: 1) when `key` is at `limit`.
        """
        current = self._inflight.get(key, 0)
        if current >= limit:
            raise OpenAIError(
                f"Too many concurrent requests for {what} (limit {limit}). "
                "Retry after a short wait.",
                429,
                code="rate_limited",
                retry_after=1,
            )
        self._inflight[key] = current + 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        self._inflight[key] = max(0, self._inflight.get(key, 0) - 1)


class Slot:
    """One admitted request; `release` is idempotent (streams release on close)."""

    def __init__(self, limiter: ConcurrencyLimiter, key: str) -> None:
        self._limiter = limiter
        self._key = key
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self._key)
