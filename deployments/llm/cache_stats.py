"""The engine's prefix cache, counted: prompt tokens looked up and tokens found.

vLLM's engine reports, with each step's scheduler stats, how many prompt tokens of the
requests it admitted were looked up in its prefix cache (`queries`) and how many of
them were there (`hits`). Its own Prometheus logger keeps them in the replica's
process-local registry, which nothing exports under Ray; this logger keeps running
totals that the model server publishes as Ray metrics per replica
(deployments/llm/server.py) and returns from `stats()`. They are what shows whether
a router sent a request where its prefix was (deployments/routing).

No vLLM import: vLLM calls `factory(vllm_config, engine_index)` for each engine and then
`record`, `log` and `log_engine_initialized` on the object it returns (its per-engine
logger protocol); a plain object with those methods is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PrefixCacheCounts:
    """Running totals since the engine started, in tokens. Only requests admitted for
    the first time count (a preempted request's second lookup would count its prompt
    twice), as in vLLM's own `prefix_cache_queries` / `prefix_cache_hits`."""

    queries: int = 0
    hits: int = 0

    def add(self, scheduler_stats: Any) -> None:
        """Adds one engine step's figures (vLLM's SchedulerStats; None: nothing)."""
        stats = getattr(scheduler_stats, "prefix_cache_stats", None)
        if stats is None:
            return
        self.queries += int(getattr(stats, "queries", 0) or 0)
        self.hits += int(getattr(stats, "hits", 0) or 0)

    def as_dict(self) -> dict[str, int]:
        return {"queries": self.queries, "hits": self.hits}


class _CountingLogger:
    """One engine's logger: adds each step's prefix cache figures to `counts`."""

    def __init__(self, counts: PrefixCacheCounts) -> None:
        self._counts = counts

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        self._counts.add(scheduler_stats)

    def log(self) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass


class CountingLoggerFactory:
    """The stat logger factory handed to vLLM (`AsyncLLM.from_engine_args(...,
    stat_loggers=[factory])`): every engine of the AsyncLLM adds to `counts`."""

    def __init__(self, counts: PrefixCacheCounts) -> None:
        self.counts = counts

    def __call__(self, vllm_config: Any, engine_index: int = 0) -> _CountingLogger:
        return _CountingLogger(self.counts)
