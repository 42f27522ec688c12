"""Prefix-aware routing (deployments/routing) through real Serve: an LLM application with
two replicas of the tiny model, a LoRA adapter version and `routing: {policy:
prefix_aware}`, called through the ingress with the `openai` SDK. Where each request ran
is read from Serve's own per-replica request counter (the metrics agent's text), what
the router decided from its exported decision counter, and what the engines found in
their prefix caches from the replicas' exported hit counters: never inferred from timing.

Sequential requests find both replicas idle, so Serve's default router (power of two
choices) would spread them at random: eight in a row on one replica would happen by
chance once in 128 runs. The prefix-aware router sends every request that shares the
first one's long system prompt to the replica that served it.

The load guard of this application trips early (more than 2 requests in flight above
the least loaded replica) so that a handful of concurrent streams shows the fallback;
sequential requests never trip it (both replicas idle).
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import TEST_ENGINE_ENV, delete_app, tiny_llm_args
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

ROUTED_APP, ROUTED_MODEL = "tiny-routed", "tiny/routed"
ADAPTER_MODEL = f"{ROUTED_MODEL}:a1"
_SAMPLE = re.compile(r"^(\w+)\{(.*)\} ([0-9.e+]+)$")


@pytest.fixture(scope="module")
def routed_app(openai_stack):
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(
        model=ROUTED_MODEL,
        routing={
            "policy": "prefix_aware",
            "min_match_chars": 64,
            "imbalance_threshold": 2,
            "imbalance_ratio": 1.0,
        },
        adapters=[{"version": "a1", "source": "fixture:tiny-lora?seed=1&base_seed=0"}],
        deployment={
            "num_replicas": 2,
            "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": TEST_ENGINE_ENV}},
        },
    )
    args["engine"]["engine_kwargs"].update(
        enable_lora=True, max_loras=1, max_cpu_loras=2, max_lora_rank=8
    )
    serve.run(build_app(args), name=ROUTED_APP, route_prefix=None)  # both replicas running
    # The ingress's catalog lists the adapter version within a refresh.
    wait_until(
        lambda: httpx.get(f"{openai_stack}/models/{ADAPTER_MODEL}").status_code == 200,
        "the adapter version in /models",
        timeout_s=30,
    )
    yield
    delete_app(ROUTED_APP)


def _samples(metrics_url: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of `name` for the routed application."""
    out = []
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and f'"{ROUTED_APP}"' in m.group(2):
            out.append((m.group(2), float(m.group(3))))
    return out


def _by(metrics_url: str, name: str, label: str) -> dict[str, float]:
    """Sum of `name`'s samples for the routed application, by `label`'s value."""
    totals: dict[str, float] = {}
    for labels, value in _samples(metrics_url, name):
        found = re.search(rf'\b{label}="([^"]+)"', labels)
        if found is not None:
            totals[found.group(1)] = totals.get(found.group(1), 0.0) + value
    return totals


def _counts(metrics_url: str) -> dict[str, float]:
    """Requests each replica of the routed application has taken, by replica id."""
    return _by(metrics_url, "ray_serve_deployment_request_counter_total", "replica")


def _decisions(metrics_url: str) -> dict[str, float]:
    return _by(metrics_url, "ray_openai_serve_router_decisions_total", "kind")


def _hits(metrics_url: str) -> dict[str, float]:
    return _by(metrics_url, "ray_openai_serve_prefix_cache_hits_total", "replica")


def _delta(now: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: now[k] - before.get(k, 0.0) for k in now if now[k] - before.get(k, 0.0) > 0}


def _settled(metrics_url: str, read, before: dict[str, float], expected: float, what: str):
    """The increase of `read(metrics_url)` since `before`, once it adds up to at least
    `expected` (Ray exports a process's metrics every few seconds)."""

    def done() -> dict[str, float] | None:
        delta = _delta(read(metrics_url), before)
        return delta if sum(delta.values()) >= expected else None

    return wait_until(done, what, timeout_s=90, every_s=0.5)


def _system(topic: str) -> str:
    text = " ".join(f"{topic} rule {i}: answer politely and in full sentences." for i in range(20))
    assert len(text) > 640
    return text


def _ask(client, model: str, system: str, question: str, max_tokens: int = 2) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
    )
    assert r.usage.completion_tokens >= 1


def test_requests_sharing_a_prefix_land_on_the_replica_that_served_it(
    routed_app, client, metrics_url
):
    system = _system("support")
    before, decided, hits = _counts(metrics_url), _decisions(metrics_url), _hits(metrics_url)
    for i in range(8):
        _ask(client, ROUTED_MODEL, system, f"question number {i}")
    delta = _settled(metrics_url, _counts, before, 8, "8 requests in the exported counters")
    assert sorted(delta.values(), reverse=True)[0] == 8, delta
    (replica,) = delta
    # The router says why: the first had no prefix to follow, the seven after it did.
    kinds = _settled(metrics_url, _decisions, decided, 8, "8 decisions exported")
    assert (kinds.get("no_match"), kinds.get("affinity")) == (1, 7), kinds
    # And the engine found the shared prompt in its cache, on that replica only.
    found = _settled(metrics_url, _hits, hits, 1, "prefix cache hits exported")
    assert set(found) == {replica}, found


def test_an_adapter_version_keeps_its_replica(routed_app, client, metrics_url):
    """Requests for the LoRA version go where Serve's multiplexing keeps the adapter
    and, sharing a prompt, stay on one replica."""
    system = _system("adapter")
    before, decided = _counts(metrics_url), _decisions(metrics_url)
    for i in range(6):
        _ask(client, ADAPTER_MODEL, system, f"adapter question {i}")
    delta = _settled(metrics_url, _counts, before, 6, "6 adapter requests counted")
    assert sorted(delta.values(), reverse=True)[0] == 6, delta
    kinds = _settled(metrics_url, _decisions, decided, 6, "6 decisions exported")
    # The first: Serve's multiplexed choice (no prefix yet); then the prefix it served.
    assert kinds.get("affinity", 0) == 5 and kinds.get("adapter", 0) == 1, kinds


def test_a_busy_replica_s_prefix_spills_over_by_power_of_two(routed_app, client, metrics_url):
    """Eight long streams at once, all sharing a prefix one replica served: affinity
    sends the first few there, then the load guard sends the rest by power of two."""
    system = _system("burst")
    _ask(client, ROUTED_MODEL, system, "warm up")
    before, decided = _counts(metrics_url), _decisions(metrics_url)
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            chunks = client.chat.completions.create(
                model=ROUTED_MODEL,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"burst {i}"},
                ],
                max_tokens=400,
                extra_body={"ignore_eos": True},
                stream=True,
            )
            assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 0
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    delta = _settled(metrics_url, _counts, before, 8, "8 streams counted")
    kinds = _settled(metrics_url, _decisions, decided, 8, "8 decisions exported")
    assert kinds.get("fallback", 0) >= 1 and kinds.get("affinity", 0) >= 1, kinds
    assert len(delta) == 2, f"the busy replica did not spill over: {delta}"


def _stable(metrics_url: str, quiet_s: float = 8.0) -> dict[str, float]:
    """The per-replica counts once every request sent so far is exported: unchanged
    for longer than Ray's export period (5 s)."""
    last = _counts(metrics_url)
    since = time.monotonic()
    deadline = since + 90
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the exported counters kept changing"
        time.sleep(0.5)
        now = _counts(metrics_url)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _replica_actor(metrics_url: str, unique_id: str):
    """The Serve replica's actor, by the name Serve gives it (its full replica id)."""
    import ray
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.constants import SERVE_NAMESPACE

    for labels, _ in _samples(metrics_url, "ray_serve_deployment_request_counter_total"):
        if f'replica="{unique_id}"' in labels:
            deployment = re.search(r'\bdeployment="([^"]+)"', labels)
            assert deployment is not None, labels
            replica = ReplicaID(unique_id, DeploymentID(deployment.group(1), ROUTED_APP))
            return ray.get_actor(replica.to_full_id_str(), namespace=SERVE_NAMESPACE)
    raise AssertionError(f"replica {unique_id} not in the exported counters")


def test_a_killed_replica_s_prefixes_move_with_no_failed_request(
    routed_app, openai_stack, metrics_url
):
    """A closed loop of requests sharing a prefix, through the SDK as users run it
    (its default retries: a request cut off by the kill gets a 503 with Retry-After,
    which the SDK retries); the replica holding the prefix is killed mid-loop."""
    import ray

    sdk = openai.OpenAI(base_url=openai_stack, api_key="test", timeout=120)
    system = _system("failover")
    before = _counts(metrics_url)
    for i in range(3):
        _ask(sdk, ROUTED_MODEL, system, f"before {i}")
    (holder,) = _settled(metrics_url, _counts, before, 3, "3 requests counted")
    actor = _replica_actor(metrics_url, holder)

    errors: list[BaseException] = []
    done = threading.Event()
    answered = 0

    def loop() -> None:
        nonlocal answered
        try:
            while not done.is_set() and answered < 40:
                _ask(sdk, ROUTED_MODEL, system, f"during {answered}", max_tokens=8)
                answered += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    wait_until(lambda: answered >= 3 or errors, "the loop running", timeout_s=60)
    at_kill = _counts(metrics_url)
    ray.kill(actor, no_restart=True)
    killed_at = answered
    wait_until(lambda: answered >= killed_at + 10 or errors, "10 answers after the kill", 180)
    done.set()
    worker.join(timeout=120)
    assert not errors, errors
    # After the kill, the prefix is followed on the replicas that remain: the last
    # requests all went to one replica that is not the killed one.
    tail_before = _stable(metrics_url)
    for i in range(5):
        _ask(sdk, ROUTED_MODEL, system, f"after {i}")
    tail = _settled(metrics_url, _counts, tail_before, 5, "5 requests after the kill counted")
    assert holder not in tail and sorted(tail.values()) == [5], (tail, at_kill)
