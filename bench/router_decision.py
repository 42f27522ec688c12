"""What the prefix-aware router's decision costs: µs per request with N cached prefixes.

    .venv/bin/python bench/router_decision.py [--prefixes 10000] [--prefix-tokens 1500]
        [--tenants 50] [--replicas 8] [--n 5000] [--seed 0]

Builds Serve's RequestRouter subclass of deployments/routing/prefix_router.py with
typed fake replicas (no Ray cluster), fills its prefix tree with `--prefixes` chat
prompts of about `--prefix-tokens` tokens each (4 characters a token): `--tenants`
system prompts of two thirds of that, each followed by its conversations' own turns,
as the router learns them once replicas accept requests. Then times, per request,
`choose_replicas` (the decision: routing key, prefix match, load guard, the fallback
pair) and `on_request_routed` (the count and the insert), for `--n` requests: half
continue a cached conversation (affinity), half start a new one under a known tenant.
The tree's bounds are raised so that every prefix stays cached.

Prints JSON, and writes it to bench/results/router-decision-<timestamp>.json
(`--out`): p50 / p99 / mean µs of each, the tree's size (nodes, characters) and its
memory (what the inserts allocated and kept, by tracemalloc). Timings are the machine's: on a
loaded machine, repeat them, and compare only runs from the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
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

DEPLOYMENT = DeploymentID(name="LLM:bench-1", app_name="bench-1")
CHARS_PER_TOKEN = 4
_WORD_LIST = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their can has been if more "
    "when will would who so no model replica cache prefix request token answer question"
)
WORDS = _WORD_LIST.split(" ")


class FakeReplica:
    """What Serve's router reads of a RunningReplica (as in the unit tests)."""

    def __init__(self, name: str) -> None:
        self.replica_id = ReplicaID(unique_id=name, deployment_id=DEPLOYMENT)
        self.node_id = "node"
        self.availability_zone: str | None = None
        self.multiplexed_model_ids: set[str] = set()
        self.max_ongoing_requests = 256
        self.is_cross_language = False

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return 0


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def _request(system: str, turns: list[str], n: int) -> PendingRequest:
    messages = [{"role": "system", "content": system}]
    messages += [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
    ]
    return PendingRequest(
        args=[GenerateRequest(request_id=f"r{n}", task="chat", messages=messages)],
        kwargs={},
        metadata=RequestMetadata(request_id=f"r{n}", internal_request_id=f"i{n}"),
    )


def _summary(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "p50": round(us[len(us) // 2], 2),
        "p99": round(us[min(len(us) - 1, int(len(us) * 0.99))], 2),
        "mean": round(statistics.fmean(us), 2),
        "max": round(us[-1], 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    prefix_chars = args.prefix_tokens * CHARS_PER_TOKEN
    system_chars = prefix_chars * 2 // 3
    config = RoutingConfig(
        policy="prefix_aware",
        max_tree_chars=args.prefixes * prefix_chars + 1_000_000,
        max_tree_nodes=4 * args.prefixes + 1_000,
    )
    router = PrefixAwareRequestRouter(
        deployment_id=DEPLOYMENT,
        handle_source=DeploymentHandleSource.REPLICA,
        use_replica_queue_len_cache=True,
    )
    router.initialize_state(**config.router_kwargs())
    replicas = [FakeReplica(f"replica-{i}") for i in range(args.replicas)]
    router.update_replicas(replicas)  # type: ignore[arg-type]
    for r in replicas:
        router.replica_queue_len_cache.update(r.replica_id, rng.randint(0, 4))

    systems = [f"tenant {t}: " + _text(rng, system_chars) for t in range(args.tenants)]
    pool = _text(rng, 1_000_000)
    tail = prefix_chars - system_chars

    def conversation(i: int) -> tuple[str, list[str]]:
        start = rng.randrange(len(pool) - tail)
        return systems[i % args.tenants], [f"conversation {i}: " + pool[start : start + tail]]

    conversations = [conversation(i) for i in range(args.prefixes)]
    # The tree's own memory: what the inserts allocate and keep (traced apart from the
    # timed part: tracing slows every allocation).
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    built = time.perf_counter()
    for i, (system, turns) in enumerate(conversations):
        replica = replicas[i % len(replicas)].replica_id
        router.on_request_routed(_request(system, turns, i), replica, None)
    built = time.perf_counter() - built
    tree_mb = (tracemalloc.get_traced_memory()[0] - traced_before) / 2**20
    tracemalloc.stop()
    tree = router.policy.tree

    decide: dict[str, list[int]] = {"affinity": [], "new_conversation": []}
    record: list[int] = []
    candidates = router._replicas_list
    for n in range(args.n):
        if n % 2 == 0:  # the next turn of a cached conversation
            system, turns = conversations[rng.randrange(len(conversations))]
            turns = [*turns, "an answer " * 20, f"next question {n}"]
            kind = "affinity"
        else:  # a new conversation of a known tenant
            system, turns = rng.choice(systems), [f"new conversation {n}: " + _text(rng, 200)]
            kind = "new_conversation"
        pr = _request(system, turns, args.prefixes + n)
        t0 = time.perf_counter_ns()
        ranks = await router.choose_replicas(candidates, pr)
        t1 = time.perf_counter_ns()
        router.on_request_routed(pr, ranks[0][0].replica_id, None)
        t2 = time.perf_counter_ns()
        decide[kind].append(t1 - t0)
        record.append(t2 - t1)

    every = decide["affinity"] + decide["new_conversation"]
    return {
        "prefixes": args.prefixes,
        "prefix_chars": prefix_chars,
        "tenants": args.tenants,
        "replicas": args.replicas,
        "requests": args.n,
        "decide_us": _summary(every),
        "decide_us_by_request": {k: _summary(v) for k, v in decide.items() if v},
        "on_request_routed_us": _summary(record),
        "decisions": dict(router.decisions),
        "tree": {"nodes": tree.nodes, "chars": tree.chars, "evicted_nodes": tree.evicted_nodes},
        "build_s": round(built, 2),
        "tree_mb": round(tree_mb, 1),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefixes", type=int, default=10_000, help="cached prefixes")
    parser.add_argument("--prefix-tokens", type=int, default=1_500, help="tokens per prefix")
    parser.add_argument("--tenants", type=int, default=50, help="distinct system prompts")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--n", type=int, default=5_000, help="requests timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results"),
        help="folder of the JSON (router-decision-<timestamp>.json); '' writes none",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        path = Path(args.out) / f"router-decision-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(text + "\n")
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
