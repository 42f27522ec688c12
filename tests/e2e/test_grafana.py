"""cluster/grafana/openai-serve.json queries only what the server exports: every metric
name in its PromQL (read out with a regex) is on the e2e server's metrics endpoint after a
few requests, with the labels the queries group and filter by. The few names that appear
only after an event this module does not cause are checked against their definitions in
our code instead, and every metric our code defines has a place on the dashboard."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "grafana" / "openai-serve.json"
# Where our metrics are defined (ray.util.metrics or ray.serve.metrics instruments).
SOURCES = [ROOT / "ingress" / "metrics.py", *sorted((ROOT / "deployments").rglob("*.py"))]

# Ray prefixes every exported name with `ray_`: ours (openai_serve_*) and Serve's.
METRIC = re.compile(r"\bray_[A-Za-z0-9_:]+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s")
# `Counter("name"`, `Histogram(\n "name"` and ingress/metrics.py's `make("Counter", "name"`.
DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram)\"?\s*[(,]\s*\"(openai_serve_\w+)\"")
# The suffixes Prometheus text shows for each kind (a gauge has none).
SUFFIXES = {"Counter": {"_total"}, "Histogram": {"_bucket", "_sum", "_count"}, "Gauge": {""}}

# Exported only once an event happens that this module does not cause: checked
# statically instead (defined in SOURCES, with the suffixes of its kind).
EVENT_ONLY = {
    # A 429 (a per-model limit or a full queue; tests/e2e/test_production.py causes one).
    "ray_openai_serve_rejected_requests",
    # Requests with an API key: auth is off on the session's stack.
    "ray_openai_serve_key_requests",
    "ray_openai_serve_key_tokens",
    # Embeddings and images, on models this module does not deploy
    # (tests/e2e/test_embeddings.py, test_images.py, test_node_sdk.py do).
    "ray_openai_serve_embedding_batch_size",
    "ray_openai_serve_image_batch_size",
    # Prefix cache hits (a prompt sharing a full KV block with an earlier one) and the
    # prefix-aware router's decisions (an application with `routing: prefix_aware`):
    # tests/e2e/test_routing.py causes and reads both.
    "ray_openai_serve_prefix_cache_hits",
    "ray_openai_serve_router_decisions",
}
# Tagged by application and deployment, not by model: a Serve metric, and the
# router's (it routes for an application).
NO_MODEL_LABEL = {"ray_openai_serve_image_batch_size", "ray_openai_serve_router_decisions"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panel_queries(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _queries(dashboard: dict) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    return _panel_queries(dashboard) + [v["definition"] for v in dashboard["templating"]["list"]]


def _split(name: str) -> tuple[str, str]:
    """`ray_x_bucket` → ("ray_x", "_bucket"): the family and its Prometheus suffix."""
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix), suffix
    return name, ""


def _used() -> dict[str, set[str]]:
    """Family → the suffixes the dashboard's queries read it with."""
    used: dict[str, set[str]] = {}
    for name in (n for q in _queries(_dashboard()) for n in METRIC.findall(q)):
        family, suffix = _split(name)
        used.setdefault(family, set()).add(suffix)
    return used


def _defined() -> dict[str, str]:
    """Our metrics as exported (`ray_` + name) → their kind, read from SOURCES."""
    return {
        f"ray_{name}": kind
        for source in SOURCES
        for kind, name in DEFINITION.findall(source.read_text())
    }


def _labels(expr: str) -> set[str]:
    """Label names the expression groups by or filters on."""
    grouped = {n.strip() for g in GROUPING.findall(expr) for n in g.split(",") if n.strip()}
    return grouped | set(MATCHER.findall(expr))


def _exported(text: str) -> dict[str, set[str]]:
    """Sample name → the label names its series carry, from Prometheus text."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = None if line.startswith("#") else SAMPLE.match(line)
        if match:
            keys = re.findall(r"([A-Za-z_]\w*)=\"", match.group(2) or "")
            series.setdefault(match.group(1), set()).update(keys)
    return series


def test_dashboard_imports_with_a_datasource_input_and_a_model_variable():
    dashboard = _dashboard()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"] == datasource for p in panels)
    assert all(t["datasource"] == datasource for p in panels for t in p["targets"])
    [model] = dashboard["templating"]["list"]
    assert model["name"] == "model" and model["datasource"] == datasource
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # Every query over one of our model-tagged metrics follows the variable.
    for expr in _panel_queries(dashboard):
        ours = {_split(n)[0] for n in METRIC.findall(expr) if "openai_serve" in n}
        if ours - NO_MODEL_LABEL:
            assert 'model=~"$model"' in expr, expr


def test_every_metric_we_define_is_on_the_dashboard_with_its_kinds_suffixes():
    defined, used = _defined(), _used()
    assert "ray_openai_serve_requests" in defined, "DEFINITION no longer matches the sources"
    assert set(defined) - set(used) == set(), "metrics missing from the dashboard"
    for name, kind in defined.items():
        wrong = used[name] - SUFFIXES[kind]
        assert not wrong, f"{name}: Prometheus shows no {wrong} for a {kind}"
    ours = {name for name in used if name.startswith("ray_openai_serve_")}
    assert ours <= set(defined), f"queried but defined nowhere: {ours - set(defined)}"
    assert set(defined) >= EVENT_ONLY, "EVENT_ONLY names a metric that is not defined"


def _wait(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.mark.e2e
def test_dashboard_metrics_are_exported(client, metrics_url):
    # Streams (time to first token, inter-token gaps), a unary answer, a 404.
    hello = [{"role": "user", "content": "m"}]
    list(
        client.chat.completions.create(model=TINY_MODEL, messages=hello, max_tokens=4, stream=True)
    )
    client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such/model", prompt="m", max_tokens=1)

    queries = _queries(_dashboard())
    wanted = {n for q in queries for n in METRIC.findall(q) if _split(n)[0] not in EVENT_ONLY}
    exported: dict[str, set[str]] = {}

    def all_there() -> bool:
        # Every wanted name, and this module's own requests to the tiny model (a name
        # may already be there from an earlier module's requests: Ray exports
        # every few seconds, so this module's may still be on their way).
        nonlocal exported
        text = httpx.get(metrics_url, timeout=30).text
        exported = _exported(text)
        return wanted <= exported.keys() and _lists_tiny_model(text)

    try:
        _wait(all_there, 60, "the dashboard's metrics to be exported")
    except AssertionError:
        ours = sorted(n for n in exported if n.startswith(("ray_openai_serve", "ray_serve")))
        pytest.fail(f"not exported: {sorted(wanted - exported.keys())}; exported: {ours}")
    for expr in queries:
        names = METRIC.findall(expr)
        assert names, f"reads no ray_ metric: {expr}"
        present = [n for n in names if n in exported]
        carried = set().union(*(exported[n] for n in present))
        if present:
            assert _labels(expr) <= carried, f"{expr}: no {_labels(expr) - carried} on {present}"
    # The model variable lists the tiny model.
    assert _lists_tiny_model(httpx.get(metrics_url, timeout=30).text)


def _lists_tiny_model(text: str) -> bool:
    return any(
        f'model="{TINY_MODEL}"' in line
        for line in text.splitlines()
        if line.startswith("ray_openai_serve_requests_total")
    )
