"""The Serve router around the policy, driven through Serve's own routing loop
(`_choose_replica_for_request`: ranks, queue-length probes, retries) with typed fake
replicas; no Ray cluster. Also: the routing package imports no engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ray.serve._private.common import (
    DeploymentHandleSource,
    DeploymentID,
    ReplicaID,
    RequestMetadata,
)
from ray.serve.request_router import PendingRequest

from deployments.contract import GenerateRequest
from deployments.routing.config import RoutingConfig
from deployments.routing.prefix_router import PrefixAwareRequestRouter

DEPLOYMENT = DeploymentID(name="LLM:m-1", app_name="m-1")
SYSTEM = "You are the support agent of ACME. Answer in one sentence. " * 12


class FakeReplica:
    """What Serve's routers read of a RunningReplica, and its queue length as the
    replica would report it when probed."""

    def __init__(self, name: str, *, models: set[str] | None = None, max_ongoing: int = 8):
        self.replica_id = ReplicaID(unique_id=name, deployment_id=DEPLOYMENT)
        self.node_id = "node"
        self.availability_zone: str | None = None
        self.multiplexed_model_ids = models or set()
        self.max_ongoing_requests = max_ongoing
        self.is_cross_language = False
        self.queue_len = 0
        self.probes = 0

    async def get_queue_len(self, *, deadline_s: float) -> int:
        self.probes += 1
        return self.queue_len

    def update_replica_info(self, info: Any) -> None:
        raise AssertionError("not used with update_replicas")


_counter = iter(range(1_000_000))


def _router(**config: Any) -> PrefixAwareRequestRouter:
    # Its own deployment id: routers of one deployment share a tree in a process.
    n = next(_counter)
    router = PrefixAwareRequestRouter(
        deployment_id=DeploymentID(name=f"LLM:m-{n}", app_name=f"m-{n}"),
        handle_source=DeploymentHandleSource.REPLICA,
        use_replica_queue_len_cache=True,
    )
    kwargs = RoutingConfig(policy="prefix_aware", min_match_chars=64, **config).router_kwargs()
    router.initialize_state(**kwargs)
    return router


def _request(*user: str, model_id: str = "") -> PendingRequest:
    messages = [{"role": "system", "content": SYSTEM}]
    messages += [{"role": "user", "content": u} for u in user]
    n = next(_counter)
    return PendingRequest(
        args=[GenerateRequest(request_id=f"r{n}", task="chat", messages=messages)],
        kwargs={},
        metadata=RequestMetadata(
            request_id=f"r{n}", internal_request_id=f"i{n}", multiplexed_model_id=model_id
        ),
    )


async def _route(router: PrefixAwareRequestRouter, pr: PendingRequest) -> str:
    """Serve's routing loop picks the replica; then the accept callback, as Serve's
    router calls it once the replica took the request."""
    replica = await asyncio.wait_for(router._choose_replica_for_request(pr), 5)
    router.on_request_routed(pr, replica.replica_id, None)
    return str(replica.replica_id.unique_id)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def _loads(router: PrefixAwareRequestRouter, **loads: int) -> None:
    for replica in router.curr_replicas.values():
        load = loads.get(replica.replica_id.unique_id, 0)
        replica.queue_len = load
        router.replica_queue_len_cache.update(replica.replica_id, load)


def test_requests_sharing_a_prefix_land_on_the_replica_that_served_it():
    async def main() -> None:
        router = _router()
        router.update_replicas([FakeReplica(n) for n in "abcd"])
        _loads(router)
        first = await _route(router, _request("tenant question 1"))
        for i in range(20):
            assert await _route(router, _request(f"follow-up {i}")) == first
        assert router.decisions["no_match"] == 1 and router.decisions["affinity"] == 20

    _run(main)


def test_without_a_shared_prefix_the_choice_is_power_of_two():
    async def main() -> None:
        router = _router()
        router.update_replicas([FakeReplica(n) for n in "abcd"])
        _loads(router)
        seen = set()
        for i in range(40):
            pr = _request()
            pr.args[0].messages[0]["content"] = f"{i} distinct system prompt " * 10
            seen.add(await _route(router, pr))
        assert len(seen) >= 3
        assert router.decisions["no_match"] == 40

    _run(main)


def test_imbalance_sends_the_request_elsewhere():
    async def main() -> None:
        router = _router(imbalance_threshold=4)
        router.update_replicas([FakeReplica(n) for n in "ab"])
        _loads(router, a=0, b=0)
        first = await _route(router, _request("q"))
        other = "b" if first == "a" else "a"
        _loads(router, **{first: 6, other: 0})
        assert await _route(router, _request("q2")) == other
        assert router.decisions["fallback"] == 1
        # Both now hold the prefix: the less loaded of the two is chosen.
        _loads(router, **{first: 0, other: 3})
        assert await _route(router, _request("q3")) == first
        assert router.decisions["affinity"] == 1

    _run(main)


def test_a_full_affinity_replica_spills_over_instead_of_waiting():
    async def main() -> None:
        router = _router(imbalance_threshold=100)  # the guard does not fire
        replicas = [FakeReplica(n, max_ongoing=4) for n in "ab"]
        router.update_replicas(replicas)
        _loads(router)
        first = await _route(router, _request("q"))
        _loads(router, **{first: 4})  # full: Serve's probe says so too
        assert await _route(router, _request("q2")) != first
        assert router.decisions["fallback"] == 1

    _run(main)


def test_an_adapter_request_goes_to_a_replica_holding_the_adapter():
    async def main() -> None:
        router = _router()
        router.update_replicas(
            [FakeReplica("a"), FakeReplica("b", models={"sql@1"}), FakeReplica("c")]
        )
        _loads(router)
        for i in range(10):
            assert await _route(router, _request(f"q{i}", model_id="sql@1")) == "b"
        assert router.decisions["adapter"] == 1 and router.decisions["affinity"] == 9
        # The base model's request with the same prefix may go anywhere the prefix is.
        assert await _route(router, _request("base q")) == "b"

    _run(main)


def test_a_dead_replica_s_prefixes_go_elsewhere():
    async def main() -> None:
        router = _router()
        replicas = {n: FakeReplica(n) for n in "abc"}
        router.update_replicas(list(replicas.values()))
        _loads(router)
        first = await _route(router, _request("q"))
        router.on_replica_actor_died(replicas[first].replica_id)
        assert router.policy.tree.replicas() == set()
        second = await _route(router, _request("q2"))
        assert second != first
        assert await _route(router, _request("q3")) == second

    _run(main)


def test_a_replica_scaled_down_is_forgotten():
    async def main() -> None:
        router = _router()
        replicas = {n: FakeReplica(n) for n in "ab"}
        router.update_replicas(list(replicas.values()))
        _loads(router)
        first = await _route(router, _request("q"))
        router.update_replicas([r for n, r in replicas.items() if n != first])
        assert router.policy.tree.replicas() == set()
        assert await _route(router, _request("q2")) != first

    _run(main)


def test_a_call_without_a_generation_is_routed_by_power_of_two():
    async def main() -> None:
        router = _router()
        router.update_replicas([FakeReplica(n) for n in "ab"])
        _loads(router)
        pr = PendingRequest(
            args=[], kwargs={}, metadata=RequestMetadata(request_id="s", internal_request_id="s")
        )
        assert await _route(router, pr) in {"a", "b"}
        assert router.decisions["unkeyed"] == 1

    _run(main)


def test_the_routing_package_imports_no_engine():
    modules = [
        "deployments.routing.config",
        "deployments.routing.prefix_tree",
        "deployments.routing.policy",
        "deployments.routing.prefix_router",
    ]
    code = (
        f"import sys, {', '.join(modules)}; "
        "print(','.join(m for m in ('vllm', 'torch', 'transformers', 'diffusers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == ""


def test_decisions_of_calls_never_routed_are_bounded():
    async def main() -> None:
        router = _router()
        router.max_pending_decisions = 3
        router.update_replicas([FakeReplica(n) for n in "ab"])
        _loads(router)
        for i in range(5):  # chosen, then cancelled before any replica accepted them
            await router.choose_replicas(router._replicas_list, _request(f"q{i}"))
        assert len(router._decided) == 3
        # A call whose decision was dropped is still remembered, and counted nowhere.
        pr = _request("q0")
        router.on_request_routed(pr, router._replicas_list[0].replica_id, None)
        assert sum(router.decisions.values()) == 0
        assert router.policy.tree.nodes > 0

    _run(main)
