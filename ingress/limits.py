"""Per-model concurrency limit, enforced in the ingress before the handle hop.

DeepInfra caps each model at 200 concurrent requests; ours is per application
(`max_concurrent_requests` in its config, published in its model card). Counted per
ingress replica: with R ingress replicas a model sees at most R x limit, and
Serve's `max_queued_requests` bounds what reaches the model's replicas.
"""

from __future__ import annotations

from ingress.errors import OpenAIError


class ConcurrencyLimiter:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}

    def inflight(self, deploy_id: str) -> int:
        return self._inflight.get(deploy_id, 0)

    def acquire(self, deploy_id: str, limit: int, model: str) -> "Slot":
        """Raises a 429 OpenAIError (Retry-After: 1) when the model is at its limit."""
        current = self._inflight.get(deploy_id, 0)
        if current >= limit:
            raise OpenAIError(
                f"Too many concurrent requests for '{model}' (limit {limit}). "
                "Retry after a short wait.", 429, code="rate_limited", retry_after=1)
        self._inflight[deploy_id] = current + 1
        return Slot(self, deploy_id)

    def _release(self, deploy_id: str) -> None:
        self._inflight[deploy_id] = max(0, self._inflight.get(deploy_id, 0) - 1)


class Slot:
    """One admitted request; `release` is idempotent (streams release on close)."""

    def __init__(self, limiter: ConcurrencyLimiter, deploy_id: str) -> None:
        self._limiter = limiter
        self._deploy_id = deploy_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self._deploy_id)
