"""deployments/llm/cache_stats.py: the prefix cache's figures as vLLM reports them per
step, summed, through the per-engine logger protocol vLLM drives."""

from __future__ import annotations

from types import SimpleNamespace

from deployments.llm.cache_stats import CountingLoggerFactory, PrefixCacheCounts


def _step(queries: int, hits: int) -> SimpleNamespace:
    return SimpleNamespace(prefix_cache_stats=SimpleNamespace(queries=queries, hits=hits))


def test_steps_add_up_and_empty_steps_count_nothing():
    counts = PrefixCacheCounts()
    counts.add(_step(100, 0))
    counts.add(_step(120, 96))
    counts.add(None)  # a step without scheduler stats
    counts.add(SimpleNamespace(prefix_cache_stats=None))
    assert counts.as_dict() == {"queries": 220, "hits": 96}


def test_every_engine_of_the_factory_adds_to_one_total():
    counts = PrefixCacheCounts()
    factory = CountingLoggerFactory(counts)
    first, second = factory(object(), 0), factory(object(), 1)
    first.record(_step(10, 4), None)
    second.record(_step(5, 5), None, mm_cache_stats=None, engine_idx=1)
    # The rest of the protocol vLLM calls: no effect, no error.
    first.log()
    first.log_engine_initialized()
    first.record_sleep_state(1, 0)
    assert counts.as_dict() == {"queries": 15, "hits": 9}


def test_vllm_takes_it_as_a_per_engine_logger_factory():
    """vLLM's StatLoggerManager wraps a factory that is not a class in its per-engine
    adapter and forwards each record to it (the installed vLLM, no engine)."""
    from vllm.v1.metrics.loggers import PerEngineStatLoggerAdapter
    from vllm.v1.metrics.stats import PrefixCacheStats, SchedulerStats

    counts = PrefixCacheCounts()
    adapter = PerEngineStatLoggerAdapter(object(), [0], CountingLoggerFactory(counts))  # type: ignore[arg-type]
    stats = SchedulerStats()
    stats.prefix_cache_stats = PrefixCacheStats()
    stats.prefix_cache_stats.record(num_tokens=64, num_hits=48, preempted=False)
    stats.prefix_cache_stats.record(num_tokens=64, num_hits=64, preempted=True)  # not again
    adapter.record(stats, None, engine_idx=0)
    assert counts.as_dict() == {"queries": 64, "hits": 48}
