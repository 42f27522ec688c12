"""A cache-aware request router for LLM applications, on Serve's own router API.

Serve builds one router per deployment handle, in the CALLER's process (here: each
ingress replica, inside its handles), and asks it `choose_replicas` for every call;
this module must therefore import no engine (no vllm, torch, transformers). An LLM
application opts in with `routing: {policy: prefix_aware}` (deployments/routing/
config.py), which sets the deployment's `request_router_config` to this class.

What Serve hands the router: a `PendingRequest` whose `args` / `kwargs` are the
handle call's own arguments, already resolved (Serve awaits argument
DeploymentResponses before routing): for `handle.generate.remote(request)` and
`handle.complete.remote(request)` (ingress/forward.py) `args[0]` is our
`GenerateRequest`, the object itself in this process, before any serialisation.
`metadata.multiplexed_model_id` is the LoRA adapter's id (the handle's
`.options(multiplexed_model_id=...)`), `metadata.internal_request_id` identifies
the call across retries. Queue lengths come from the base class's cache, which Serve
updates at every send, every accept and every completion (strict max_ongoing_requests,
on by default). `on_request_routed` is called once a replica accepted the call.

The decision (deployments/routing/policy.py), per call:

1. Candidates exactly as Serve's power of two choices takes them: for an adapter,
   the multiplex rule (replicas holding it, then those with the fewest adapters,
   then all, on Serve's timeouts); otherwise every replica for the prefix match and
   the locality rule for the fallback pair.
2. The replicas among them that were sent the longest prefix of the request's key,
   if it is at least min_match_chars long and their load is within the guard
   (imbalance_threshold and imbalance_ratio against the least loaded candidate), are
   tried first, the least loaded of them winning; then a power-of-two pair, so a
   full affinity replica spills over instead of queueing.
3. Otherwise the power-of-two pair alone: Serve's default behaviour.

Once a replica accepts, the request's key is inserted for it, and the decision is
counted by kind (`decisions`, exported as `openai_serve_router_decisions`:
deployments/routing/metrics.py). A replica that leaves (scale down, death) is
forgotten: its prefixes match elsewhere from the next request.

No FIFOMixin, unlike Serve's default router: FIFO hands a replica found for one
request to the oldest pending one, which would give the replica chosen for a prefix
to a request that does not share it (Ray's PrefixCacheAffinityRouter omits it too).
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from deployments.routing.config import RoutingConfig
from deployments.routing.metrics import decision_recorder
from deployments.routing.policy import Decision, PrefixPolicy, shared_tree


class PrefixAwareRequestRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    """Prefix affinity with a load guard, power of two choices otherwise.

    Serve pickles this class by value (cloudpickle) and rebuilds it in each handle's
    process, with a copy of this module's globals: state shared between the routers of
    a process lives in deployments/routing/policy.py, which travels by reference.
    """

    # Decisions waiting for their request to be accepted, at most this many (a call
    # cancelled before routing never reaches on_request_routed; the oldest go first).
    # Only the decision is kept (a few hundred bytes), not the key: on_request_routed
    # builds the key again (microseconds) rather than hold up to max_key_chars per call.
    max_pending_decisions = 10_000

    def initialize_state(self, **kwargs: Any) -> None:
        """Serve calls it with the deployment's `request_router_kwargs`
        (RoutingConfig.router_kwargs)."""
        config = RoutingConfig.model_validate({**kwargs, "policy": "prefix_aware"})
        owner = (self._deployment_id.app_name, self._deployment_id.name)
        self._policy: PrefixPolicy[ReplicaID] = PrefixPolicy(
            config, shared_tree(owner, config), decision_recorder(owner[0])
        )
        self._decided: dict[str, Decision[ReplicaID]] = {}

    @property
    def policy(self) -> PrefixPolicy[ReplicaID]:
        return self._policy

    @property
    def decisions(self) -> dict[str, int]:
        """Decisions by kind since this router started (a plain dict, for metrics)."""
        return self._policy.decisions

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        adapter = bool(
            pending_request is not None and pending_request.metadata.multiplexed_model_id
        )
        if adapter:
            candidate_ids = self.apply_multiplex_routing(pending_request=pending_request)
        else:
            candidate_ids = self.apply_locality_routing(pending_request=pending_request)
        if not candidate_ids:
            return []
        pair = self._power_of_two(candidate_ids)
        if pending_request is None:
            return [pair]
        texts = self._policy.texts(pending_request.args)
        among = candidate_ids if adapter else self._replica_id_set
        decision = self._policy.decide(texts, among, self._load, adapter=adapter)
        self._remember(pending_request.metadata.internal_request_id, decision)
        first = [self._replicas[r] for r in decision.targets if r in self._replicas]
        return [first, pair] if first else [pair]

    def _load(self, replica_id: ReplicaID) -> int | None:
        load: int | None = self._replica_queue_len_cache.get(replica_id)
        return load

    def _power_of_two(self, candidate_ids: set[ReplicaID]) -> list[RunningReplica]:
        """Two distinct random candidates (one if there is one), as Serve's default."""
        ids = list(candidate_ids)
        chosen = ids if len(ids) <= 2 else random.sample(ids, 2)
        random.shuffle(chosen)
        return [self._replicas[r] for r in chosen if r in self._replicas]

    def _remember(self, request_id: str, decision: Decision[ReplicaID]) -> None:
        self._decided.pop(request_id, None)  # a retry: the latest decision counts
        self._decided[request_id] = decision
        if len(self._decided) > self.max_pending_decisions:
            del self._decided[next(iter(self._decided))]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        # None when dropped from the bounded map: the key is remembered, nothing counted.
        decision = self._decided.pop(pending_request.metadata.internal_request_id, None)
        self._policy.record(decision, self._policy.texts(pending_request.args), replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = set(self._replica_id_set)
        super().update_replicas(replicas)
        for gone in before - self._replica_id_set:
            self._policy.forget(gone)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._policy.forget(replica_id)
