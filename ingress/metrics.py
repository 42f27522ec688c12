"""Prometheus metrics through Ray's metrics export (every node's metrics agent
serves them; Ray prefixes each name with `ray_`). Tagged per model and deploy_id;
the per-key counters also by `key`, the key's id (ingress/auth.py `key_id`), only
when auth is on. The queries for each are in README.md ("Metrics")."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from deployments.contract import Task

_TAGS = ("model", "deploy_id")
_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class Instrument(Protocol):
    """The part of ray.util.metrics' Counter, Gauge and Histogram the ingress uses."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...

    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class _Unexported:
    """An instrument that records nothing (outside a Ray worker: unit tests)."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


class IngressMetrics:
    """Created once per ingress replica; every method is cheap (no I/O).

    Args:
        export: False builds instruments that record nothing (no Ray needed).
    """

    def __init__(self, export: bool = True) -> None:
        def make(kind: str, name: str, doc: str, tags: tuple[str, ...], **kw: Any) -> Instrument:
            if not export:
                return _Unexported()
            from ray.util import metrics

            instrument: Instrument = getattr(metrics, kind)(name, doc, tag_keys=tags, **kw)
            return instrument

        self.requests = make(
            "Counter",
            "openai_serve_requests",
            "Requests by task and HTTP status.",
            (*_TAGS, "task", "status"),
        )
        self.rejected = make(
            "Counter",
            "openai_serve_rejected_requests",
            "Requests refused with 429 (limits, full queue).",
            (*_TAGS, "reason"),
        )
        self.ttft = make(
            "Histogram",
            "openai_serve_time_to_first_token_seconds",
            "Time to the first streamed token.",
            _TAGS,
            boundaries=_LATENCY_BUCKETS,
        )
        self.itl = make(
            "Histogram",
            "openai_serve_inter_token_latency_seconds",
            "Time between streamed chunks.",
            _TAGS,
            boundaries=_LATENCY_BUCKETS,
        )
        self.latency = make(
            "Histogram",
            "openai_serve_request_latency_seconds",
            "End-to-end request latency.",
            (*_TAGS, "task"),
            boundaries=_LATENCY_BUCKETS,
        )
        self.prompt_tokens = make(
            "Counter", "openai_serve_prompt_tokens", "Prompt tokens processed.", _TAGS
        )
        self.generation_tokens = make(
            "Counter", "openai_serve_generation_tokens", "Tokens generated.", _TAGS
        )
        self.running = make(
            "Gauge",
            "openai_serve_running_requests",
            "Requests in flight through this ingress replica.",
            _TAGS,
        )
        self.key_requests = make(
            "Counter",
            "openai_serve_key_requests",
            "Requests by API key id, task and HTTP status (auth on only).",
            (*_TAGS, "task", "status", "key"),
        )
        self.key_tokens = make(
            "Counter",
            "openai_serve_key_tokens",
            "Prompt plus generated tokens by API key id (auth on only).",
            (*_TAGS, "key"),
        )

    @staticmethod
    def tags(model: str, deploy_id: str, **extra: object) -> dict[str, str]:
        return {"model": model, "deploy_id": deploy_id, **{k: str(v) for k, v in extra.items()}}


class RequestTimer:
    """Times one forwarded request: TTFT and inter-chunk gaps while streaming, tokens
    and end-to-end latency when it ends."""

    def __init__(
        self,
        metrics: IngressMetrics,
        model: str,
        deploy_id: str,
        task: Task | None,
        key: str | None = None,
    ) -> None:
        self._metrics = metrics
        self._tags = metrics.tags(model, deploy_id)
        self._task = task
        self._key = key
        self._start = time.monotonic()
        self._last: float | None = None

    def chunk(self) -> None:
        now = time.monotonic()
        if self._last is None:
            self._metrics.ttft.observe(now - self._start, self._tags)
        else:
            self._metrics.itl.observe(now - self._last, self._tags)
        self._last = now

    def finish(self, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens:
            self._metrics.prompt_tokens.inc(prompt_tokens, self._tags)
        if completion_tokens:
            self._metrics.generation_tokens.inc(completion_tokens, self._tags)
        if self._key is not None and prompt_tokens + completion_tokens:
            self._metrics.key_tokens.inc(
                prompt_tokens + completion_tokens, {**self._tags, "key": self._key}
            )
        self._metrics.latency.observe(
            time.monotonic() - self._start, {**self._tags, "task": self._task or ""}
        )


def agent_metrics_url() -> str:
    """The Prometheus URL of the metrics agent on this replica's node (one GCS round
    trip: `ray.nodes()` lists every node of the cluster)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    node = next(n for n in nodes if n["NodeID"] == node_id)
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def fetch_text(url: str, timeout_s: float) -> str:
    """GET `url` as text (blocking).

    Raises:
        OSError: no answer within `timeout_s`, or an HTTP error.
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text: str = response.read().decode("utf-8")
    return text


class NodeMetrics:
    """This replica's node's Prometheus text, read from Ray's metrics agent, so one
    URL (and one key) serves both the API and its metrics.

    The agent's URL is looked up once per replica (a node's metrics port does not
    change; a failed lookup is tried again on the next scrape). Reads are blocking
    calls, so they run on this object's own single thread, never on the default
    executor that the request path uses for large bodies: a slow agent or a burst
    of scrapes cannot hold up API answers. Scrapes that arrive while a read is under
    way share it.

    Args:
        find_url: looks up the agent's URL (blocking); tests inject it.
        fetch: reads a URL as text (blocking); tests inject it.
        timeout_s: bound on each read.
    """

    def __init__(
        self,
        find_url: Callable[[], str] = agent_metrics_url,
        fetch: Callable[[str, float], str] = fetch_text,
        timeout_s: float = 5.0,
    ) -> None:
        self._find_url = find_url
        self._fetch = fetch
        self._timeout_s = timeout_s
        self._url: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-metrics")
        self._reading: asyncio.Future[str] | None = None

    async def text(self) -> str:
        """The agent's Prometheus text.

        Raises:
            Exception: the lookup or the read failed (the caller answers a 500).
        """
        if self._reading is None:
            reading = asyncio.get_running_loop().run_in_executor(self._executor, self._read)
            reading.add_done_callback(self._done)
            self._reading = reading
        # Shielded: a scraper that leaves does not cancel the read others wait for.
        return await asyncio.shield(self._reading)

    def close(self) -> None:
        """Stops the thread (queued reads are dropped); called at replica shutdown."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _read(self) -> str:
        if self._url is None:
            self._url = self._find_url()
        return self._fetch(self._url, self._timeout_s)

    def _done(self, reading: asyncio.Future[str]) -> None:
        if self._reading is reading:
            self._reading = None
        if not reading.cancelled():
            reading.exception()  # retrieved here in case every scraper has left
