"""Fleet benchmark of the LLM applications' request routers (issue #30, item 5):
`routing: {policy: prefix_aware}` against Serve's default power of two choices, on two
replicas of one model, under workloads that share long prefixes and one that does not.

    .venv/bin/python bench/fleet_bench.py --models tiny,gemma --rounds 3      # the full run
    .venv/bin/python bench/fleet_bench.py --models tiny --rounds 1 --scale 0.25 \\
        --prefix-tokens 600                                                   # a smoke run

What runs. One private Ray cluster per model (bench/servers.py's machinery: `ray start
--head` on 127.0.0.1 with its own temp dir and free ports, Ray's token auth on, every
process marked with LLM_BENCH_RUN and killed by pid at the end), and `serve run` of our
ingress plus TWO LLM applications of the same model directory with the same engine
arguments, differing only in `routing`: `fleet-<model>-p2c` (model `<name>-p2c`,
`policy: power_of_two`) and `fleet-<model>-prefix` (model `<name>-prefix`, `policy:
prefix_aware`, its other fields at their defaults unless `--prefix-routing` gives JSON).
Each application has `num_replicas: 2`, each replica `num_cpus: 1` and `engine.cpu_threads:
1` (one replica per core on the 2-core machine; Ray is told 4 CPUs so that the four
replicas place, but only one application is loaded at a time), the engine as one process
(as serve_config.yaml runs it), `enable_prefix_caching: true` and an explicit KV cache
size (below). Both applications stay up for the whole run, so the routers are compared on
the same engines' code, the same machine and the same minutes.

Models. `tiny`: the fixture Llama (deployments/models/tiny_llama.py) built with
`max_position_embeddings=8192` into its own cache directory (`tiny-llama-seed0-ctx8192`;
the default fixture, 2048 positions, is too short for 2k-token chats), served with
`max_model_len: 4096`, float32. `gemma`: as bench/llm_bench.py's (package:gemma3-270m,
`max_model_len: 4096`, bf16 where the CPU computes it, else float32).

Workloads (chat completions, streamed with `stream_options.include_usage`, temperature 0,
`ignore_eos`, `max_tokens` 16 by default so that prefill dominates; text is seeded
pseudo-words sized in tokens by the model's own tokenizer's characters per token):

- chat: 8 tenants, each with a ~1,500-token system prompt; 32 conversations (tenant i % 8)
  of 6 turns (~60-token user messages). Turn k+1 is sent only after turn k's answer and
  carries that answer as an assistant message; it joins the back of the queue, so all
  conversations are live at once, as users of a loaded fleet are.
- rag: 16 documents of ~1,500 tokens (system message); 96 questions of ~30 tokens, each
  about a document drawn at random.
- control: 64 requests, each with its own ~1,500-token system prompt: no shared prefix.
- skew: chat's shape, but half of the conversations (so half of all requests) come from
  tenant 0, the rest round-robin over the other 7.

Load: a closed loop of `--concurrency` clients (default 8) over a queue of ready turns.
TTFT is request sent -> first chunk carrying text; tokens/s is the run's output tokens
(the server's usage) / its wall time. Every round uses fresh text (seeded by seed, round
and workload), so no round's cache helps a later one; within a round both routers get
the very same requests. Rounds interleave the routers: for each workload, p2c then
prefix in odd rounds, prefix then p2c in even ones.

KV cache per replica: about half of a workload's reusable prefix tokens, as on a loaded
fleet (otherwise each replica caches everything and no router can differ). Reusable
prefix tokens: chat / skew: the tenants' system prompts plus each conversation's history
before its last turn; rag: the documents; with the defaults both are ~24k tokens, so one
size serves every workload: half of the median over the selected prefix workloads. The
size is set in bytes (`kv_cache_memory_bytes`; vLLM's CPU platform takes it when
VLLM_CPU_KVCACHE_SPACE is unset, which this bench sees to) from the model's config.json,
the way vLLM's KV manager spends it: blocks of 128 tokens (the CPU default); layers in
groups of equal size (one group of all layers for a model without sliding windows;
Gemma 3 270M: 3 full-attention layers and 15 with a 512-token window -> groups of 3, one
full and five sliding); a block of a group costs group size x 128 x (kv heads x head dim
x 2 x dtype bytes). A cached prefix takes ceil(tokens / 128) blocks in each full group
and, for a hit past it, its window's last ceil(512 / 128) + 1 blocks in each sliding
group. The JSON records the target, the bytes and the capacity vLLM itself logged
("KV cache size: N tokens").

Per replica, per run: request share from Serve's own counter
`ray_serve_deployment_request_counter_total` on the Ray metrics export endpoint
(waited for until its deltas account for every request sent); prefix cache queries
and hits (tokens) from `ray_openai_serve_prefix_cache_{queries,hits}_total` (tags
`deploy_id`, `replica`); routing decisions by kind from
`ray_openai_serve_router_decisions_total`. Missing metrics are recorded as null.
Ray exports metrics every 2 s here (RAY_metrics_report_interval_ms).

Output: bench/results/fleet-<timestamp>.json (configuration, KV sizing, every run's
figures per round, per-round ratios prefix / p2c and their medians, target verdicts)
and .md (the tables, also printed). Exit status 1 if a server failed, a run had
errors, or a process was left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo

import httpx
from load import percentile
from servers import (
    OURS_CPU_ENGINE_ENV,
    REPO,
    ModelSpec,
    Server,
    engine_env,
)

ROUTERS = ("p2c", "prefix")
POLICIES = {"p2c": "power_of_two", "prefix": "prefix_aware"}
WORKLOADS = ("chat", "rag", "control", "skew")
PREFIX_WORKLOADS = ("chat", "rag", "skew")
BLOCK_SIZE = 128  # vLLM's CPU default KV block (tokens)
METRICS_INTERVAL_MS = 2000

# key: (public name, model source, engine kwargs)
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tiny": (
        "bench/tiny-llama",
        "fixture:tiny-llama?seed=0 (max_position_embeddings 8192)",
        {"max_model_len": 4096, "dtype": "float32", "enforce_eager": True},
    ),
    "gemma": (
        "google/gemma-3-270m",
        "package:gemma3-270m",
        {"max_model_len": 4096, "dtype": "bfloat16-or-float32", "enforce_eager": True},
    ),
}

# ---------------------------------------------------------------------------- text


_SYLLABLE_TEXT = (
    "ka lo mi re su ta ne vo pi da ru se fo li ma no ke zu ba te wi ro ge la "
    "an el in or us ar en ir ol um ven tor mal sen dri pla cor nex bri"
)
_SYLLABLES = _SYLLABLE_TEXT.split()


def word_pool(n: int = 4096, seed: int = 0) -> list[str]:
    """`n` pseudo-words of 1 to 3 syllables, the same for a seed."""
    rng = random.Random(f"pool:{seed}")
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def make_text(rng: random.Random, tokens: int, chars_per_token: float, pool: list[str]) -> str:
    """About `tokens` tokens of pseudo-words drawn with `rng`."""
    target = max(1, round(tokens * chars_per_token))
    words: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(pool)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def chars_per_token(model_dir: Path, pool: list[str]) -> float:
    """Characters per token of this bench's pseudo-words under the model's tokenizer
    (transformers, offline); 4.0 when the tokenizer cannot be loaded."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        sample = make_text(random.Random("cpt"), 4000, 4.0, pool)
        return len(sample) / max(1, len(tok(sample, add_special_tokens=False)["input_ids"]))
    except Exception as e:  # the sizing stays usable, and says so
        print(f"  tokenizer not loaded ({type(e).__name__}: {e}); assuming 4 chars/token")
        return 4.0


# ---------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class WorkloadParams:
    """The workloads' shape; `scaled` shrinks the counts (not the texts) for a smoke run."""

    tenants: int = 8
    conversations: int = 32
    turns: int = 6
    documents: int = 16
    questions: int = 96
    control_requests: int = 64
    prefix_tokens: int = 1500
    user_tokens: int = 60
    question_tokens: int = 30
    hot_share: float = 0.5
    max_tokens: int = 16

    def scaled(self, scale: float) -> WorkloadParams:
        def n(x: int, least: int) -> int:
            return max(least, round(x * scale))

        return replace(
            self,
            conversations=n(self.conversations, 2),
            questions=n(self.questions, 2),
            control_requests=n(self.control_requests, 2),
        )


@dataclass
class Session:
    """One conversation (or one single-turn request): its tenant (-1: none), system
    message and user messages, sent in order, each after the previous answer."""

    tenant: int
    system: str
    turns: list[str]


@dataclass
class Workload:
    name: str
    sessions: list[Session]  # in the order their first turns are queued

    @property
    def requests(self) -> int:
        return sum(len(s.turns) for s in self.sessions)


def skew_tenants(conversations: int, tenants: int, hot_share: float) -> list[int]:
    """Tenant of each conversation: round(hot_share x conversations) of them tenant 0,
    the rest round-robin over tenants 1..tenants-1 (all of them when there is one)."""
    hot = round(conversations * hot_share)
    others = list(range(1, tenants)) or [0]
    return [0] * hot + [others[i % len(others)] for i in range(conversations - hot)]


def build_workload(
    name: str, params: WorkloadParams, seed: str, cpt: float, pool: list[str]
) -> Workload:
    """The workload `name` with text seeded by `seed` (the run's seed, round and
    workload): the same requests for every router of a round, fresh ones each round."""
    rng = random.Random(f"{seed}:{name}")

    def text(tokens: int) -> str:
        return make_text(rng, tokens, cpt, pool)

    p = params
    if name in ("chat", "skew"):
        systems = [f"Tenant {t} instructions: {text(p.prefix_tokens)}" for t in range(p.tenants)]
        if name == "chat":
            tenants = [i % p.tenants for i in range(p.conversations)]
        else:
            tenants = skew_tenants(p.conversations, p.tenants, p.hot_share)
        sessions = [
            Session(t, systems[t], [f"Turn {k}: {text(p.user_tokens)}" for k in range(p.turns)])
            for t in tenants
        ]
    elif name == "rag":
        docs = [
            f"Answer from this document. Document {d}: {text(p.prefix_tokens)}"
            for d in range(p.documents)
        ]
        sessions = []
        for i in range(p.questions):
            d = rng.randrange(p.documents)
            sessions.append(Session(d, docs[d], [f"Question {i}: {text(p.question_tokens)}"]))
    elif name == "control":
        sessions = [
            Session(-1, f"Request {i}: {text(p.prefix_tokens)}", [text(p.question_tokens)])
            for i in range(p.control_requests)
        ]
    else:
        raise ValueError(f"unknown workload {name!r}")
    rng.shuffle(sessions)
    return Workload(name, sessions)


def reusable_prefix_tokens(name: str, params: WorkloadParams) -> int:
    """Tokens of prompt text that a later request of the workload can find cached:
    chat / skew: the system prompts and each conversation's history before its last
    turn (user messages and answers); rag: the documents; control: none."""
    p = params
    if name in ("chat", "skew"):
        if name == "chat":
            tenants = min(p.tenants, p.conversations)
        else:
            tenants = len(set(skew_tenants(p.conversations, p.tenants, p.hot_share)))
        history = (p.turns - 1) * (p.user_tokens + p.max_tokens)
        return tenants * p.prefix_tokens + p.conversations * history
    if name == "rag":
        return p.documents * p.prefix_tokens
    return 0


def prefix_endpoints(name: str, params: WorkloadParams) -> int:
    """Distinct points where a cached prefix is resumed (each needs its sliding
    window's tail cached): chat / skew one per tenant and per conversation, rag one
    per document."""
    if name in ("chat", "skew"):
        return params.tenants + params.conversations
    if name == "rag":
        return params.documents
    return 0


# ---------------------------------------------------------------------------- KV sizing


@dataclass(frozen=True)
class KVLayout:
    """What one token of KV cache costs in a model, as vLLM's KV manager groups it."""

    layer_token_bytes: int  # kv heads x head dim x 2 (K and V) x dtype bytes
    full_layers: int
    sliding_layers: int
    sliding_window: int | None
    block_size: int = BLOCK_SIZE

    @property
    def groups(self) -> tuple[int, int, int]:
        """(layers per group, full-attention groups, sliding-window groups): vLLM puts
        layers of one kind in groups of the smallest kind's count (of the largest when
        they are within 1.5x of each other)."""
        counts = [c for c in (self.full_layers, self.sliding_layers) if c]
        size = min(counts)
        if max(counts) < 1.5 * size:
            size = max(counts)
        return size, math.ceil(self.full_layers / size), math.ceil(self.sliding_layers / size)

    @property
    def block_bytes(self) -> int:
        """One block of one group."""
        return self.groups[0] * self.block_size * self.layer_token_bytes

    def blocks_for(self, prefix_tokens: int, endpoints: int) -> int:
        """Blocks that hold `prefix_tokens` of cached prefixes resumed at `endpoints`
        points: every full group holds them all, every sliding group the window's tail
        at each endpoint."""
        _, full, sliding = self.groups
        blocks = full * math.ceil(prefix_tokens / self.block_size)
        if sliding and self.sliding_window:
            tail = math.ceil(self.sliding_window / self.block_size) + 1
            blocks += sliding * endpoints * tail
        return blocks

    def bytes_for(self, prefix_tokens: int, endpoints: int) -> int:
        return self.blocks_for(prefix_tokens, endpoints) * self.block_bytes


DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


def kv_layout(config: dict[str, Any], dtype: str) -> KVLayout:
    """The KV layout of a model from its config.json (text config for multimodal ones)."""
    c = config.get("text_config") or config
    heads = c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    layers = c["num_hidden_layers"]
    types = c.get("layer_types") or ["full_attention"] * layers
    sliding = sum(1 for t in types if t == "sliding_attention")
    return KVLayout(
        layer_token_bytes=heads * head_dim * 2 * DTYPE_BYTES[dtype],
        full_layers=layers - sliding,
        sliding_layers=sliding,
        sliding_window=c.get("sliding_window") if sliding else None,
    )


def kv_sizing(
    layout: KVLayout,
    params: WorkloadParams,
    workloads: Iterable[str],
    max_model_len: int,
    fraction: float = 0.5,
) -> dict[str, Any]:
    """Each replica's KV cache: `fraction` of the median reusable prefix tokens over the
    selected prefix workloads (and their endpoints), at least one max_model_len request
    with 25 % to spare (vLLM refuses to start below one)."""
    names = [w for w in workloads if w in PREFIX_WORKLOADS] or ["chat"]
    per = {
        w: {
            "reusable_prefix_tokens": reusable_prefix_tokens(w, params),
            "endpoints": prefix_endpoints(w, params),
        }
        for w in names
    }
    tokens = round(fraction * statistics.median(v["reusable_prefix_tokens"] for v in per.values()))
    endpoints = round(fraction * statistics.median(v["endpoints"] for v in per.values()))
    wanted = layout.bytes_for(tokens, endpoints)
    floor = math.ceil(1.25 * layout.bytes_for(max_model_len, 1))
    size = max(wanted, floor)
    for v in per.values():
        v["fraction_held"] = round(tokens / v["reusable_prefix_tokens"], 3)
    return {
        "fraction": fraction,
        "target_prefix_tokens": tokens,
        "target_endpoints": endpoints,
        "kv_cache_memory_bytes": size,
        "kv_cache_mib": round(size / 2**20, 1),
        "raised_to_one_max_len_request": size > wanted,
        "layout": asdict(layout) | {"groups": layout.groups, "block_bytes": layout.block_bytes},
        "workloads": per,
    }


# ---------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

SERVE_REQUESTS = "ray_serve_deployment_request_counter_total"
CACHE_QUERIES = "ray_openai_serve_prefix_cache_queries_total"
CACHE_HITS = "ray_openai_serve_prefix_cache_hits_total"
DECISIONS = "ray_openai_serve_router_decisions_total"
WATCHED = (SERVE_REQUESTS, CACHE_QUERIES, CACHE_HITS, DECISIONS)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_prometheus(text: str, names: Iterable[str] = WATCHED) -> Samples:
    """The samples of `names` in a Prometheus text page, keyed by (name, sorted labels);
    samples that repeat (one per exporting process) are added up."""
    wanted = set(names)
    out: Samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) not in wanted:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        key = (m.group(1), labels)
        out[key] = out.get(key, 0.0) + value
    return out


def by_label(
    samples: Samples, name: str, key: str, match: dict[str, str]
) -> dict[str, float] | None:
    """Sum of `name`'s samples by label `key`, over samples whose labels include
    `match`; None when the page has no sample of `name` at all."""
    if not any(n == name for n, _ in samples):
        return None
    out: dict[str, float] = {}
    for (n, labels), value in samples.items():
        d = dict(labels)
        if n == name and key in d and all(d.get(k) == v for k, v in match.items()):
            out[d[key]] = out.get(d[key], 0.0) + value
    return out


def delta(
    after: dict[str, float] | None, before: dict[str, float] | None
) -> dict[str, float] | None:
    if after is None:
        return None
    before = before or {}
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def replica_figures(app: str, before: Samples, after: Samples) -> dict[str, Any]:
    """Per replica of `app`: requests, share, prefix cache queries, hits, hit rate;
    and the fleet's hit rate, the busiest / least busy replica's share, decisions."""
    requests = (
        delta(
            by_label(after, SERVE_REQUESTS, "replica", {"application": app}),
            by_label(before, SERVE_REQUESTS, "replica", {"application": app}),
        )
        or {}
    )
    queries = delta(
        by_label(after, CACHE_QUERIES, "replica", {"deploy_id": app}),
        by_label(before, CACHE_QUERIES, "replica", {"deploy_id": app}),
    )
    hits = delta(
        by_label(after, CACHE_HITS, "replica", {"deploy_id": app}),
        by_label(before, CACHE_HITS, "replica", {"deploy_id": app}),
    )
    decisions = delta(
        by_label(after, DECISIONS, "kind", {"deploy_id": app}),
        by_label(before, DECISIONS, "kind", {"deploy_id": app}),
    )
    total = sum(requests.values())
    names = sorted(set(requests) | set(queries or {}))
    replicas = {}
    for r in names:
        q = None if queries is None else queries.get(r, 0.0)
        h = None if hits is None else hits.get(r, 0.0)
        replicas[r] = {
            "requests": requests.get(r, 0.0),
            "share": round(requests.get(r, 0.0) / total, 4) if total else None,
            "cache_queries": q,
            "cache_hits": h,
            "hit_rate": round(h / q, 4) if q and h is not None else None,
        }
    shares = [v["requests"] for v in replicas.values()]
    # A replica that took nothing is in the counter only once it took something: count
    # the fleet's two replicas even when one of them is missing.
    while len(shares) < 2:
        shares.append(0.0)
    fleet_q = sum(queries.values()) if queries is not None else None
    fleet_h = sum(hits.values()) if hits is not None else None
    return {
        "replicas": replicas,
        "requests_counted": total,
        "fleet_hit_rate": round(fleet_h / fleet_q, 4) if fleet_q and fleet_h is not None else None,
        "max_share": round(max(shares) / total, 4) if total else None,
        "min_share": round(min(shares) / total, 4) if total else None,
        "busiest_over_least": round(max(shares) / min(shares), 3) if min(shares) else None,
        "decisions": decisions,
    }


# ---------------------------------------------------------------------------- ratios


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 4)


# (name, figure of a run)
RATIO_METRICS: list[tuple[str, Callable[[dict[str, Any]], float | None]]] = [
    ("ttft_p50", lambda r: r["ttft_ms"]["p50"]),
    ("ttft_p90", lambda r: r["ttft_ms"]["p90"]),
    ("tok_s", lambda r: r["output_tok_s"]),
    ("fleet_hit_rate", lambda r: r["fleet"]["fleet_hit_rate"]),
    ("busiest_over_least", lambda r: r["fleet"]["busiest_over_least"]),
]


def round_ratios(prefix: dict[str, Any], p2c: dict[str, Any]) -> dict[str, float | None]:
    """prefix / p2c for each figure of one round's pair of runs."""
    return {name: ratio(get(prefix), get(p2c)) for name, get in RATIO_METRICS}


def median_ratios(per_round: list[dict[str, float | None]]) -> dict[str, float | None]:
    return {name: median(r.get(name) for r in per_round) for name, _ in RATIO_METRICS}


def verdicts(
    workload: str, ratios: dict[str, float | None], prefix_balance: float | None
) -> dict[str, bool | None]:
    """Issue #30's targets for a workload, from the median ratios (None: not measured).
    `prefix_balance` is the median over rounds of the prefix-aware run's busiest /
    least busy replica requests."""

    def le(x: float | None, bound: float) -> bool | None:
        return None if x is None else x <= bound

    def ge(x: float | None, bound: float) -> bool | None:
        return None if x is None else x >= bound

    def within(x: float | None) -> bool | None:
        return None if x is None else 0.97 <= x <= 1.03

    if workload in ("chat", "rag"):
        return {
            "ttft_p50 <= 0.6x": le(ratios["ttft_p50"], 0.6),
            "tok_s >= 1.2x": ge(ratios["tok_s"], 1.2),
            "fleet_hit_rate >= 1.6x": ge(ratios["fleet_hit_rate"], 1.6),
        }
    if workload == "control":
        return {
            "tok_s within 0.97-1.03x": within(ratios["tok_s"]),
            "ttft_p50 within 0.97-1.03x": within(ratios["ttft_p50"]),
        }
    if workload == "skew":
        return {
            "busiest/least <= 1.5 (prefix)": le(prefix_balance, 1.5),
            "ttft_p90 <= 1.0x": le(ratios["ttft_p90"], 1.0),
        }
    return {}


# ---------------------------------------------------------------------------- load


@dataclass
class Outcome:
    ok: bool
    session: int
    turn: int
    ttft_s: float | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answer: str = ""
    error: str | None = None


async def _chat(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], session: int, turn: int
) -> Outcome:
    start = time.perf_counter()
    ttft = None
    usage: dict[str, Any] = {}
    parts: list[str] = []
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return Outcome(False, session, turn, error=f"HTTP {r.status_code}: {text[:200]}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    return Outcome(False, session, turn, error=f"in-band: {chunk['error']}"[:200])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - start
                        parts.append(piece)
    except (TimeoutError, httpx.HTTPError, json.JSONDecodeError) as e:
        return Outcome(False, session, turn, error=f"{type(e).__name__}: {e}"[:200])
    if ttft is None:
        return Outcome(False, session, turn, error="stream carried no text")
    return Outcome(
        True,
        session,
        turn,
        ttft_s=ttft,
        latency_s=time.perf_counter() - start,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        answer="".join(parts),
    )


def messages_for(session: Session, turn: int, answers: list[str]) -> list[dict[str, str]]:
    """The messages of a session's turn `turn`: system, then each earlier user message
    with its answer, then this turn's user message."""
    out = [{"role": "system", "content": session.system}]
    for k in range(turn):
        out += [
            {"role": "user", "content": session.turns[k]},
            {"role": "assistant", "content": answers[k]},
        ]
    out.append({"role": "user", "content": session.turns[turn]})
    return out


async def run_workload(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    concurrency: int,
    max_tokens: int,
    budget_s: float,
    request_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Runs the workload closed-loop: `concurrency` clients over a queue of ready turns
    (each session's first turn queued at the start, its next turn at the back once the
    answer came). No new request starts after `budget_s`."""
    url = f"{base_url}/chat/completions"
    ready: deque[tuple[int, int]] = deque((i, 0) for i in range(len(workload.sessions)))
    answers: list[list[str]] = [[] for _ in workload.sessions]
    outcomes: list[Outcome] = []
    in_flight = 0
    changed = asyncio.Condition()

    def can_go() -> bool:  # a turn is ready, or nothing is left that could queue one
        return bool(ready) or in_flight == 0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=request_timeout_s, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + budget_s

        async def worker() -> None:
            nonlocal in_flight
            while True:
                async with changed:
                    await changed.wait_for(can_go)
                    if not ready or time.perf_counter() > deadline:
                        changed.notify_all()
                        return
                    i, k = ready.popleft()
                    in_flight += 1
                session = workload.sessions[i]
                body = {
                    "model": model,
                    "messages": messages_for(session, k, answers[i]),
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                outcome = await _chat(client, url, body, i, k)
                async with changed:
                    outcomes.append(outcome)
                    in_flight -= 1
                    if outcome.ok and k + 1 < len(session.turns):
                        answers[i].append(outcome.answer)
                        ready.append((i, k + 1))
                    changed.notify_all()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return summarize(outcomes, wall, planned=workload.requests)


def summarize(outcomes: list[Outcome], wall_s: float, planned: int) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    tokens = sum(o.completion_tokens for o in ok)
    errors = [o.error or "?" for o in outcomes if not o.ok]

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000.0, 1)

    return {
        "requests_planned": planned,
        "requests_sent": len(outcomes),
        "requests_ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "wall_s": round(wall_s, 2),
        "output_tokens": tokens,
        "prompt_tokens": sum(o.prompt_tokens for o in ok),
        "mean_prompt_tokens": round(sum(o.prompt_tokens for o in ok) / len(ok), 1) if ok else None,
        "output_tok_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "ttft_ms": {f"p{q}": ms(percentile(ttfts, q)) for q in (50, 90, 99)},
    }


# ---------------------------------------------------------------------------- the fleet


def app_name(model_key: str, router: str) -> str:
    return f"fleet-{model_key}-{router}"


def model_name(model: ModelSpec, router: str) -> str:
    return f"{model.name}-{router}"


def fleet_config(
    model: ModelSpec,
    port: int,
    replica_env: dict[str, str],
    prefix_routing: dict[str, Any],
) -> dict[str, Any]:
    """serve run's config: the ingress and one LLM application per router."""
    apps: list[dict[str, Any]] = [
        {
            "name": "openai",
            "route_prefix": "/",
            "import_path": "ingress.builder:build_app",
            "args": {"auth": {"enabled": False}},
        }
    ]
    for router in ROUTERS:
        routing = {"policy": POLICIES[router]}
        if router == "prefix":
            routing.update(prefix_routing)
        apps.append(
            {
                "name": app_name(model.key, router),
                "route_prefix": None,
                "import_path": "deployments.llm.builder:build_app",
                "args": {
                    "model": model_name(model, router),
                    "version": "1",
                    "default": True,
                    "model_source": str(model.path),
                    "engine": {"engine_kwargs": dict(model.engine_kwargs), "cpu_threads": 1},
                    "deployment": {
                        "num_replicas": 2,
                        "ray_actor_options": {
                            "num_cpus": 1,
                            "runtime_env": {"env_vars": replica_env},
                        },
                    },
                    "routing": routing,
                },
            }
        )
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": apps,
    }


@dataclass
class FleetServer(Server):
    """`ours` (servers.Server: throughput mode, scripts/single_node.env) with two LLM
    applications of two replicas each."""

    prefix_routing: dict[str, Any] = field(default_factory=dict)

    def replica_env(self) -> dict[str, str]:
        env = engine_env(self.model, self.threads_bind)
        env.update(OURS_CPU_ENGINE_ENV)
        # Unset: vLLM's CPU platform would take it over kv_cache_memory_bytes (and a
        # blank value fails vLLM's own int() of it).
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        return env

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # nor may a worker inherit it
        return env

    def serve_config(self) -> dict:
        return fleet_config(self.model, self.port, self.replica_env(), self.prefix_routing)

    def wait_fleet(self, timeout_s: float) -> float:
        """Until both applications are RUNNING with 2 running replicas each."""
        start = time.monotonic()
        names = {model_name(self.model, r) for r in ROUTERS}
        while time.monotonic() - start < timeout_s:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                data = httpx.get(f"{self.base_url}/models", timeout=5).json().get("data", [])
                ready = {
                    m["id"]
                    for m in data
                    if m.get("id") in names
                    and str(m.get("status", "")).upper() == "RUNNING"
                    and (m.get("running_replicas") or 0) >= 2
                }
                if ready == names:
                    return time.monotonic() - start
                failed = [m["id"] for m in data if "FAILED" in str(m.get("status", "")).upper()]
                if failed:
                    raise RuntimeError(f"deploy failed: {failed}\n{self.log_tail()}")
            time.sleep(3)
        raise TimeoutError(f"fleet not ready in {timeout_s} s\n{self.log_tail()}")

    def samples(self) -> Samples:
        try:
            return parse_prometheus(httpx.get(self.metrics_url, timeout=30).text)
        except httpx.HTTPError:
            return {}

    def kv_log_lines(self) -> list[str]:
        """What each engine logged about its KV cache (vLLM: 'KV cache size: N tokens')."""
        found: set[str] = set()
        logs = self.workdir / "ray" if self.workdir else None
        for path in logs.rglob("*") if logs and logs.exists() else ():
            if not path.is_file() or path.suffix not in (".out", ".err", ".log"):
                continue
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if "KV cache size" in line:
                        found.add(line[line.find("KV cache size") :].strip()[:200])
        return sorted(found)


def settle(
    server: FleetServer, app: str, before: Samples, expected: int, timeout_s: float = 90.0
) -> Samples:
    """Metrics after a run, once Serve's request counter accounts for the `expected`
    requests of `app` and the prefix cache counters stopped moving (Ray exports every
    METRICS_INTERVAL_MS); what there is after `timeout_s` otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Samples = {}
    while time.monotonic() < deadline:
        now = server.samples()
        counted = (
            delta(
                by_label(now, SERVE_REQUESTS, "replica", {"application": app}),
                by_label(before, SERVE_REQUESTS, "replica", {"application": app}),
            )
            or {}
        )
        if sum(counted.values()) >= expected:
            cache = by_label(now, CACHE_QUERIES, "replica", {"deploy_id": app})
            if cache is None or cache == by_label(
                last, CACHE_QUERIES, "replica", {"deploy_id": app}
            ):
                return now
            last = now
        time.sleep(METRICS_INTERVAL_MS / 1000 + 0.5)
    print(f"    metrics did not settle in {timeout_s} s for {app}", flush=True)
    return server.samples()


def warm_up(server: FleetServer, pool: list[str], cpt: float, timeout_s: float) -> None:
    """A few short, unrelated requests per application until every one succeeds, so
    both replicas of each have run the engine once."""
    wl = Workload(
        "warmup",
        [
            Session(-1, make_text(random.Random(f"warm{i}"), 64, cpt, pool), ["hello"])
            for i in range(8)
        ],
    )
    deadline = time.monotonic() + timeout_s
    for router in ROUTERS:
        while True:
            r = asyncio.run(
                run_workload(
                    server.base_url,
                    model_name(server.model, router),
                    wl,
                    concurrency=4,
                    max_tokens=4,
                    budget_s=60,
                )
            )
            if not r["errors"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"warm-up errors: {r['error_samples']}")
            time.sleep(3)


def resolve(key: str, gpu: bool) -> tuple[ModelSpec, dict[str, Any]]:
    from deployments.dtype import resolve_dtype
    from deployments.models.sources import cache_root, resolve_model_source

    name, source, kwargs = MODELS[key]
    if key == "tiny":
        from deployments.models.tiny_llama import build_tiny_llama

        path = build_tiny_llama(
            cache_root() / "fixtures" / "tiny-llama-seed0-ctx8192",
            seed=0,
            max_position_embeddings=8192,
        )
    else:
        path = resolve_model_source(source)
    kwargs = resolve_dtype(dict(kwargs), cuda=gpu)
    config = json.loads((path / "config.json").read_text())
    spec = ModelSpec(
        key=key, name=name, source=source, path=path, engine_kwargs=kwargs, kv_cache_gib=0
    )
    return spec, config


# ---------------------------------------------------------------------------- the run


def bench_model(key: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    spec, config = resolve(key, gpu=False)
    params = WorkloadParams(prefix_tokens=args.prefix_tokens, max_tokens=args.max_tokens).scaled(
        args.scale
    )
    pool = word_pool()
    cpt = chars_per_token(spec.path, pool)
    layout = kv_layout(config, spec.engine_kwargs["dtype"])
    sizing = kv_sizing(
        layout,
        params,
        args.workloads,
        spec.engine_kwargs["max_model_len"],
        fraction=args.kv_fraction,
    )
    spec.engine_kwargs.update(
        enable_prefix_caching=True, kv_cache_memory_bytes=sizing["kv_cache_memory_bytes"]
    )
    print(
        f"== {key}: {spec.name} from {spec.path}; {cpt:.2f} chars/token; KV cache per replica "
        f"{sizing['kv_cache_mib']} MiB ({sizing['kv_cache_memory_bytes']} bytes): "
        f"{sizing['target_prefix_tokens']} prefix tokens, "
        + ", ".join(f"{w} {v['fraction_held']:.0%}" for w, v in sizing["workloads"].items())
        + " of its reusable prefix tokens",
        flush=True,
    )
    entry: dict[str, Any] = {
        "spec": {
            "key": key,
            "name": spec.name,
            "source": spec.source,
            "path": str(spec.path),
            "engine_kwargs": spec.engine_kwargs,
        },
        "params": asdict(params),
        "chars_per_token": round(cpt, 3),
        "kv": sizing,
        "rounds": [],
    }
    server = FleetServer(
        "ours",
        spec,
        ray_num_cpus=4,
        prefix_routing=args.prefix_routing,
        extra_env={
            "RAY_metrics_report_interval_ms": str(METRICS_INTERVAL_MS),
        },
    )
    t0 = time.monotonic()
    try:
        server.start()
        entry["ready_after_s"] = round(server.wait_fleet(args.start_timeout), 1)
        warm_up(server, pool, cpt, args.start_timeout)
        entry["warm_after_s"] = round(time.monotonic() - t0, 1)
        entry["kv_engine_log"] = server.kv_log_lines()
        print(f"  fleet ready in {entry['warm_after_s']} s; {entry['kv_engine_log']}", flush=True)
        for r in range(1, args.rounds + 1):
            order = list(ROUTERS) if r % 2 else list(reversed(ROUTERS))
            rnd: dict[str, Any] = {"round": r, "order": order, "runs": {}}
            for name in args.workloads:
                wl = build_workload(name, params, f"{args.seed}:{r}", cpt, pool)
                rnd["runs"][name] = {}
                for router in order:
                    app = app_name(key, router)
                    before = server.samples()
                    result = asyncio.run(
                        run_workload(
                            server.base_url,
                            model_name(spec, router),
                            wl,
                            concurrency=args.concurrency,
                            max_tokens=params.max_tokens,
                            budget_s=args.run_budget_s,
                        )
                    )
                    after = settle(server, app, before, result["requests_sent"])
                    result["fleet"] = replica_figures(app, before, after)
                    rnd["runs"][name][router] = result
                    f = result["fleet"]
                    print(
                        f"  round {r} {name:7} {router:6} {result['requests_ok']}/"
                        f"{result['requests_planned']} ok, {result['output_tok_s']} tok/s, "
                        f"TTFT p50 {result['ttft_ms']['p50']} p90 {result['ttft_ms']['p90']} ms, "
                        f"hit {f['fleet_hit_rate']}, shares "
                        f"{[v['share'] for v in f['replicas'].values()]}, "
                        f"errors {result['errors']} {result['error_samples'][:1]}",
                        flush=True,
                    )
            entry["rounds"].append(rnd)
    except Exception as e:
        entry["failure"] = f"{type(e).__name__}: {e}"[:4000]
        print(f"  FAILED {entry['failure'][:2000]}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            entry.setdefault("kv_engine_log", server.kv_log_lines())
        entry["stop"] = server.stop()
        if server.workdir:
            for log in server.workdir.glob("*.log"):
                shutil.copy(log, log_dir / f"{key}-{log.name}")
        server.cleanup_files()
        print(
            f"  stopped in {entry['stop']['stop_s']} s, clean={entry['stop']['clean']}", flush=True
        )
    entry["total_s"] = round(time.monotonic() - t0, 1)
    entry["comparison"] = compare(entry["rounds"], args.workloads)
    return entry


def compare(rounds: list[dict[str, Any]], workloads: Iterable[str]) -> dict[str, Any]:
    """Per workload: the ratios prefix / p2c of each round, their medians, the median
    figures of each router, and the targets' verdicts."""
    out: dict[str, Any] = {}
    for name in workloads:
        pairs = [
            (rnd["round"], rnd["runs"][name])
            for rnd in rounds
            if name in rnd["runs"] and set(ROUTERS) <= set(rnd["runs"][name])
        ]
        if not pairs:
            continue
        per_round = [{"round": r, **round_ratios(runs["prefix"], runs["p2c"])} for r, runs in pairs]
        med = median_ratios(per_round)
        figures = {
            router: {m: median(get(runs[router]) for _, runs in pairs) for m, get in RATIO_METRICS}
            | {
                "max_share": median(runs[router]["fleet"]["max_share"] for _, runs in pairs),
                "errors": sum(runs[router]["errors"] for _, runs in pairs),
            }
            for router in ROUTERS
        }
        out[name] = {
            "per_round": per_round,
            "median": med,
            "median_figures": figures,
            "targets": verdicts(name, med, figures["prefix"]["busiest_over_least"]),
        }
    return out


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Fleet benchmark (prefix-aware vs power of two), {report['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; load average at "
        f"start {m['load_average_start'][0]:.1f}; vLLM {m['vllm']}, Ray {m['ray']}. "
        f"Rounds {report['rounds']}, concurrency {report['concurrency']}, scale "
        f"{report['scale']}; took {report['total_s']:.0f} s. Load client: "
        f"{report['client_scheduling']}.",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    for model in report["models"]:
        kv = model["kv"]
        p = model["params"]
        lines += [
            f"## {model['spec']['key']}: {model['spec']['name']}",
            "",
            f"2 replicas per router, 1 CPU and 1 engine thread each; max_tokens "
            f"{p['max_tokens']}, prefixes of ~{p['prefix_tokens']} tokens; KV cache per "
            f"replica {kv['kv_cache_mib']} MiB = {kv['target_prefix_tokens']} prefix tokens ("
            + ", ".join(
                f"{w} {v['fraction_held']:.0%} of {v['reusable_prefix_tokens']}"
                for w, v in kv["workloads"].items()
            )
            + f"); vLLM logged: {'; '.join(model.get('kv_engine_log') or ['-'])}",
            "",
        ]
        if model.get("failure"):
            lines += [f"FAILED: {model['failure'].splitlines()[0][:300]}", ""]
        lines += [
            "| workload | router | round | ok | err | tok/s | TTFT p50 ms | TTFT p90 ms "
            "| fleet hit rate | hit rate per replica | request share per replica | decisions |",
            "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --- | --- | --- |",
        ]
        for rnd in model["rounds"]:
            for name, runs in rnd["runs"].items():
                for router, r in runs.items():
                    f = r["fleet"]
                    reps = list(f["replicas"].values())
                    lines.append(
                        "| "
                        + " | ".join(
                            [
                                name,
                                router,
                                str(rnd["round"]),
                                str(r["requests_ok"]),
                                str(r["errors"]),
                                _fmt(r["output_tok_s"]),
                                _fmt(r["ttft_ms"]["p50"]),
                                _fmt(r["ttft_ms"]["p90"]),
                                _fmt(f["fleet_hit_rate"]),
                                " / ".join(_fmt(x["hit_rate"]) for x in reps) or "-",
                                " / ".join(_fmt(x["share"]) for x in reps) or "-",
                                ", ".join(f"{k} {v:.0f}" for k, v in (f["decisions"] or {}).items())
                                or "-",
                            ]
                        )
                        + " |"
                    )
        lines += [
            "",
            "Ratios prefix / p2c (TTFT: < 1 is better for prefix; tok/s and hit rate: > 1):",
            "",
            "| workload | round | TTFT p50 | TTFT p90 | tok/s | fleet hit rate "
            "| busiest/least | targets |",
            "| --- | --- | --: | --: | --: | --: | --: | --- |",
        ]
        for name, c in model["comparison"].items():
            rows = [(str(x["round"]), x) for x in c["per_round"]]
            rows.append(("median", c["median"]))
            for label, x in rows:
                targets = (
                    ", ".join(f"{k}: {_fmt(v)}" for k, v in c["targets"].items())
                    if label == "median"
                    else ""
                )
                lines.append(
                    f"| {name} | {label} | {_fmt(x['ttft_p50'])} | {_fmt(x['ttft_p90'])} | "
                    f"{_fmt(x['tok_s'])} | {_fmt(x['fleet_hit_rate'])} | "
                    f"{_fmt(x['busiest_over_least'])} | {targets} |"
                )
        stop = model.get("stop") or {}
        lines += [
            "",
            f"Stop and leak check: stopped in {stop.get('stop_s')} s, "
            + ("no process left" if stop.get("clean") else f"left {stop}"),
            "",
        ]
    return "\n".join(lines)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", default="tiny,gemma", help="comma list of tiny,gemma")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma list of " + ",".join(WORKLOADS)
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies conversations, questions and control requests",
    )
    parser.add_argument(
        "--prefix-tokens", type=int, default=1500, help="tokens of each system prompt / document"
    )
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--kv-fraction",
        type=float,
        default=0.5,
        help="each replica's KV cache as a fraction of the reusable prefix tokens",
    )
    parser.add_argument(
        "--prefix-routing",
        type=json.loads,
        default={},
        help="JSON of the prefix_aware routing fields, e.g. '{\"imbalance_threshold\": 4}'",
    )
    parser.add_argument(
        "--run-budget-s",
        type=float,
        default=900.0,
        help="no new request of a workload run starts after this",
    )
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--normal-client",
        action="store_true",
        help="leave the load client at normal priority (see load.py)",
    )
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [m for m in args.models if m not in MODELS] + [
        w for w in args.workloads if w not in WORKLOADS
    ]
    if unknown:
        parser.error(f"unknown model or workload: {unknown}")
    signal.signal(signal.SIGTERM, _interrupt)

    from llm_bench import machine_info
    from load import prioritize_client

    started = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.gettempdir()) / "fleet-bench-logs" / started
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    client = "normal (--normal-client)" if args.normal_client else prioritize_client()
    report: dict[str, Any] = {
        "started": started,
        "command": " ".join([".venv/bin/python", "bench/fleet_bench.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "client_scheduling": client,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "scale": args.scale,
        "workloads": args.workloads,
        "prefix_routing": args.prefix_routing,
        "logs": str(log_dir),
        "models": [],
    }
    for key in args.models:
        report["models"].append(bench_model(key, args, log_dir))
    report["machine"]["load_average_end"] = os.getloadavg()
    report["total_s"] = round(time.monotonic() - t0, 1)
    path = out / f"fleet-{started}"
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    path.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {path}.json, .md (server logs in {log_dir})")
    bad = any(
        m.get("failure")
        or not m["stop"]["clean"]
        or any(
            r["errors"]
            for rnd in m["rounds"]
            for runs in rnd["runs"].values()
            for r in runs.values()
        )
        for m in report["models"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
