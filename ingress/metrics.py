"""Prometheus metrics through Ray's metrics export (every node's metrics agent
serves them; Ray prefixes each name with `ray_`). Tagged per model and deploy_id.
The queries for each are in README.md ("Metrics")."""

from __future__ import annotations

from typing import Any

_TAGS = ("model", "deploy_id")
_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class IngressMetrics:
    """Created once per ingress replica; every method is cheap (no I/O)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.requests = Counter(
            "openai_serve_requests", "Requests by endpoint and HTTP status.",
            tag_keys=(*_TAGS, "endpoint", "status"))
        self.rejected = Counter(
            "openai_serve_rejected_requests", "Requests refused with 429 (limits, full queue).",
            tag_keys=(*_TAGS, "reason"))
        self.ttft = Histogram(
            "openai_serve_time_to_first_token_seconds", "Time to the first streamed token.",
            boundaries=_LATENCY_BUCKETS, tag_keys=_TAGS)
        self.itl = Histogram(
            "openai_serve_inter_token_latency_seconds", "Time between streamed chunks.",
            boundaries=_LATENCY_BUCKETS, tag_keys=_TAGS)
        self.latency = Histogram(
            "openai_serve_request_latency_seconds", "End-to-end request latency.",
            boundaries=_LATENCY_BUCKETS, tag_keys=(*_TAGS, "endpoint"))
        self.prompt_tokens = Counter(
            "openai_serve_prompt_tokens", "Prompt tokens processed.", tag_keys=_TAGS)
        self.generation_tokens = Counter(
            "openai_serve_generation_tokens", "Tokens generated.", tag_keys=_TAGS)
        self.running = Gauge(
            "openai_serve_running_requests", "Requests in flight through this ingress replica.",
            tag_keys=_TAGS)

    @staticmethod
    def tags(model: str, deploy_id: str, **extra: Any) -> dict[str, str]:
        return {"model": model, "deploy_id": deploy_id, **{k: str(v) for k, v in extra.items()}}


class NoMetrics:
    """Stands in outside a Ray worker (unit tests of the ASGI app)."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self

    @staticmethod
    def tags(model: str, deploy_id: str, **extra: Any) -> dict[str, str]:
        return {}


class StreamRecorder:
    """Times one request: TTFT and inter-chunk gaps while streaming, tokens and
    end-to-end latency when it ends. `on_close` runs exactly once at the end (the
    ingress releases the request's concurrency slot there)."""

    def __init__(self, metrics: Any, model: str, deploy_id: str, endpoint: str) -> None:
        import time

        self._clock = time.monotonic
        self._metrics = metrics
        self._tags = metrics.tags(model, deploy_id)
        self._endpoint = endpoint
        self._start = self._clock()
        self._last: float | None = None
        self.on_close: Any = None

    def chunk(self) -> None:
        now = self._clock()
        if self._last is None:
            self._metrics.ttft.observe(now - self._start, self._tags)
        else:
            self._metrics.itl.observe(now - self._last, self._tags)
        self._last = now

    def finish(self, prompt_tokens: int, completion_tokens: int) -> None:
        self._metrics.prompt_tokens.inc(prompt_tokens, self._tags)
        if completion_tokens:
            self._metrics.generation_tokens.inc(completion_tokens, self._tags)
        self._metrics.latency.observe(self._clock() - self._start,
                                      {**self._tags, "endpoint": self._endpoint})

    def close(self) -> None:
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()


def node_metrics_text(timeout_s: float = 5.0) -> str:
    """Fetches the Prometheus text of the metrics agent on this replica's node.

    Raises:
        OSError: the agent did not answer (reported as a 500 by the caller).
    """
    import urllib.request

    import ray

    node_id = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (node-local)
        return response.read().decode("utf-8")
