"""What the LLM and embeddings engines share: one vLLM AsyncLLM held in `_engine`,
its shutdown, and the health check Serve calls."""

from __future__ import annotations

from typing import Any


class AsyncLLMHolder:
    """Base of deployments.llm.vllm_engine.VLLMEngine and
    deployments.embeddings.engine.VLLMEmbeddingEngine; `start` sets `_engine`."""

    _engine: Any = None

    def shutdown(self) -> None:
        """Stops the engine core processes (idempotent)."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def check_health(self) -> None:
        """Raises only if the engine is dead (Serve then replaces the replica)."""
        if self._engine is None:
            raise RuntimeError("engine not started")
        await self._engine.check_health()
