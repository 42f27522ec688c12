"""Prefix-aware routing (deployments/routing) through real Serve: an LLM application with
two replicas of the tiny model and `routing: {policy: prefix_aware}`, called through the
ingress with the `openai` SDK. Where each request ran is read from Serve's own
per-replica request counter (the metrics agent's text), not inferred from timing.

Sequential requests find both replicas idle, so Serve's default router (power of two
choices) would spread them at random: eight in a row on one replica would happen by
chance once in 128 runs. The prefix-aware router sends every request that shares the
first one's long system prompt to the replica that served it.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import TEST_ENGINE_ENV, delete_app, tiny_llm_args
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

ROUTED_APP, ROUTED_MODEL = "tiny-routed", "tiny/routed"
_COUNTER = re.compile(r"^ray_serve_deployment_request_counter_total\{(.*)\} ([0-9.e+]+)$")


@pytest.fixture(scope="module")
def routed_app(openai_stack):
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(
        model=ROUTED_MODEL,
        routing={"policy": "prefix_aware", "min_match_chars": 64},
        deployment={
            "num_replicas": 2,
            "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": TEST_ENGINE_ENV}},
        },
    )
    serve.run(build_app(args), name=ROUTED_APP, route_prefix=None)  # both replicas running
    yield
    delete_app(ROUTED_APP)


def _counts(metrics_url: str) -> dict[str, float]:
    """Requests each replica of the routed application has taken, by replica id."""
    counts: dict[str, float] = {}
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        m = _COUNTER.match(line)
        if m and f'application="{ROUTED_APP}"' in m.group(1):
            replica = re.search(r'replica="([^"]+)"', m.group(1))
            if replica is not None:
                counts[replica.group(1)] = counts.get(replica.group(1), 0.0) + float(m.group(2))
    return counts


def _delta(metrics_url: str, before: dict[str, float], expected: int) -> dict[str, float]:
    """Per-replica requests since `before`, once the exported counters account for all
    `expected` of them (Ray exports a replica's counters every few seconds)."""

    def settled() -> dict[str, float] | None:
        now = _counts(metrics_url)
        delta = {r: now[r] - before.get(r, 0.0) for r in now}
        return delta if sum(delta.values()) >= expected else None

    return wait_until(settled, f"{expected} requests in the exported counters", timeout_s=90)


def test_requests_sharing_a_prefix_land_on_the_replica_that_served_it(
    routed_app, client, metrics_url
):
    system = " ".join(f"rule {i}: answer politely and in full sentences." for i in range(20))
    assert len(system) > 640
    before = _counts(metrics_url)
    for i in range(8):
        r = client.chat.completions.create(
            model=ROUTED_MODEL,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": f"question number {i}"},
            ],
            max_tokens=2,
            temperature=0,
        )
        assert r.usage.completion_tokens >= 1
    delta = _delta(metrics_url, before, 8)
    assert sorted(delta.values(), reverse=True)[0] == 8, delta
