"""Autoscaling under a load trace (issue #30, item 4): one LLM application of the tiny
fixture model with Serve autoscaling (min 1, max 3 replicas), driven by closed-loop
streaming chat clients whose number follows a trace; records the replicas over time,
TTFT per phase, and every request's outcome.

    python bench/autoscale_trace.py            # ramp 1→24 streams over 120 s, hold 60 s,
                                               # 2 streams for 90 s, 0 for 45 s (~7 min)
    python bench/autoscale_trace.py --quick    # the same shape, shortened (~4 min)

Writes bench/results/autoscale-<YYYYmmdd-HHMMSS>.json and .md, prints the Markdown.
Exit status 1 if a request failed, the server failed, or a process was left.

Server: `bench/servers.py`'s "ours" (its own `ray start --head` on 127.0.0.1 with its own
temp dir, free ports and Ray's token authentication on; `scripts/single_node.env` and
Serve's throughput mode as `scripts/serve.sh` runs it; `serve run` of the ingress app
(API keys off: loopback only) and one `deployments.llm.builder` app `bench-tiny` of
`fixture:tiny-llama?seed=0`, the engine arguments of llm_bench.py's "tiny" model).
What this run changes, all in the application's `deployment:` (deployments/options.py
merges it over the LLM defaults):

- `autoscaling_config`: min_replicas 1, max_replicas 3, target_ongoing_requests 8,
  upscale_delay_s 10, downscale_delay_s 20, look_back_period_s 10 (Serve's 30 s would
  lag the trace by half a minute; the metrics push interval stays Serve's 10 s);
- `max_ongoing_requests` 16 (2 × the target: a replica past its target still takes work
  while a new one starts; the rest waits in the ingress's handle queue, bounded at
  2 × 16 = 32 per ingress replica by deployments/options.py, above the 24 streams, so
  nothing is shed with a 429);
- `ray_actor_options.num_cpus` 1 per replica; Ray is given 8 logical CPUs so three
  replicas (and the ingress, 0 CPUs) always fit; the engine keeps the one OpenMP thread
  Ray gives a 1-CPU replica (`cpu_threads` unset): three engines share the 2 cores.
- `graceful_shutdown_timeout_s` stays the model default's 20 s: a replica being stopped
  takes no new requests and finishes the ones it has for up to that long.

Load: closed loop. Each client sends a streaming `POST /chat/completions` (one short
user message from load.make_prompts, `max_tokens` 64, `ignore_eos`, `temperature` 0,
`stream_options.include_usage`, header `x-request-id: as-<client>-<n>`) and the next one
when it ends. A controller sets the number of active clients to `streams_at(trace, t)`
4 times a second: a new client starts at once; a client past the target finishes the
request it has in flight and stops (requests are never cancelled, so every request
either completes or is a server-side failure). The trace, each phase with a stream count
that goes linearly from its first to its last value (rounded down, so the ramp adds one
client every 120/23 = 5.2 s and reaches 24 at the hold):

    ramp  120 s  1 → 24     hold  60 s  24     low  90 s  2     idle  45 s  0

"low" is where the replicas scale down while requests are in flight: 2 streams over 3
replicas, so the replicas being stopped are likely serving one (graceful drain). "idle"
shows the app at min_replicas with no load.

A request fails on: a status other than 200, a stream that breaks or ends without
`data: [DONE]`, an in-band error chunk, no text at all, or the client's timeout (120 s).
TTFT: request sent → first chunk carrying `delta.content`. Tokens: the server's `usage`.

Replica states: a second process (this file with `--poll`, started like the server's
own processes, so it carries the run's marker and the leak check covers it) connects to
the private cluster as a Ray driver (`ray.init(address=127.0.0.1:<GCS port>)`, with the
same RAY_AUTH_MODE=token / RAY_AUTH_TOKEN_PATH as the cluster: the dashboard's REST API,
which `serve status` uses, is off in bench/servers.py's clusters) and reads the Serve
controller's application details every second (what `serve status` and the ingress's
catalog read: every replica's id and state, the deployment's target_num_replicas),
appending one JSON line per sample to a file. A separate process keeps Ray's driver
threads out of the load client, which runs at real-time FIFO 1 (load.prioritize_client).

Timeline (one row a second, from the load client): t since load start, the phase, the
target stream count, requests in flight, and the latest replica sample (RUNNING,
STARTING, STOPPING, target). Requests are assigned to the phase in which they were
sent; a phase's tok/s is the output tokens of its requests over its length. Scale times
are from the load start (scale-up: the first sample with target ≥ k, and with ≥ k
RUNNING) and from the load drop, the start of the phase after the one with the most
streams (scale-down: the first sample with target ≤ k, and with ≤ k replicas listed at
all, the stopped ones gone). Drain: each replica seen STOPPING (last seen RUNNING, first
and last seen STOPPING, seen gone), the requests in flight from its last RUNNING sample
to its end, and how many failed. Which replica served a request is not known: the
client sees no replica id, and in Serve's throughput mode (Ray 2.60) the model replicas
write no per-request access line (tried: nothing with the log buffer at 1 either), so
"in flight while a replica stopped" includes the requests on the surviving replica.

Scale from zero is not part of this trace (min_replicas 1); it is measured by
tests/e2e/test_catalog.py (docs/api.md: first answer after 28.9 s on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo

import httpx
from load import make_prompts, percentile, prioritize_client, warm_up
from servers import REPO, Server

APP = "bench-tiny"  # servers._ours_config names the LLM application bench-<model key>


# ---------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class Phase:
    """One phase of the trace: `duration_s` long, its stream count going linearly from
    `streams_from` to `streams_to` (equal for a flat phase)."""

    name: str
    duration_s: float
    streams_from: int
    streams_to: int


def build_trace(
    *,
    ramp_s: float = 120.0,
    ramp_from: int = 1,
    ramp_to: int = 24,
    hold_s: float = 60.0,
    low_s: float = 90.0,
    low_streams: int = 2,
    idle_s: float = 45.0,
) -> list[Phase]:
    """The trace of issue #30: ramp, hold, a step down to a few streams, then none.
    A phase of length 0 is left out."""
    phases = [
        Phase("ramp", ramp_s, ramp_from, ramp_to),
        Phase("hold", hold_s, ramp_to, ramp_to),
        Phase("low", low_s, low_streams, low_streams),
        Phase("idle", idle_s, 0, 0),
    ]
    return [p for p in phases if p.duration_s > 0]


def phase_bounds(trace: list[Phase]) -> list[tuple[Phase, float, float]]:
    """Each phase with its start and end, in seconds from the trace's start."""
    out = []
    t = 0.0
    for p in trace:
        out.append((p, t, t + p.duration_s))
        t += p.duration_s
    return out


def trace_length(trace: list[Phase]) -> float:
    return sum(p.duration_s for p in trace)


def phase_at(trace: list[Phase], t: float) -> Phase | None:
    """The phase running at `t` (a phase holds [start, end)); None outside the trace."""
    for p, start, end in phase_bounds(trace):
        if start <= t < end:
            return p
    return None


def streams_at(trace: list[Phase], t: float) -> int:
    """The number of active streams the trace asks for at `t`: linear within a phase from
    its first to its last value, rounded toward the first (a ramp 1→24 over 120 s adds a
    client every 120/23 s and reaches 24 when the next phase starts); 0 outside."""
    for p, start, end in phase_bounds(trace):
        if start <= t < end:
            step = (p.streams_to - p.streams_from) * (t - start) / p.duration_s
            return p.streams_from + int(step)  # int() truncates toward zero: either way
    return 0


def drop_time(trace: list[Phase]) -> float | None:
    """The load drop: the start of the first phase after the (last) phase with the most
    streams that asks for fewer; None if the load never drops."""
    bounds = phase_bounds(trace)
    if not bounds:
        return None
    peak = max(max(p.streams_from, p.streams_to) for p in trace)
    last_peak = max(
        i for i, (p, _, _) in enumerate(bounds) if max(p.streams_from, p.streams_to) == peak
    )
    for p, start, _ in bounds[last_peak + 1 :]:
        if p.streams_from < peak:
            return start
    return None


# ---------------------------------------------------------------------------- records


@dataclass
class Request:
    """One request's outcome; times in seconds from the load start."""

    request_id: str
    client: int
    start: float
    end: float = 0.0
    ttft: float | None = None
    status: int | None = None
    ok: bool = False
    tokens: int = 0
    error: str | None = None
    phase: str = ""


def plain(state: Any) -> str:
    """An enum or string state as its plain name ('RUNNING')."""
    value = getattr(state, "value", state)
    return str(value).rsplit(".", 1)[-1]


def replica_sample(details: dict[str, Any], app: str) -> dict[str, Any]:
    """Pure: the replicas of `app`'s (one) deployment from the controller's application
    details: counts by state, the target, and each replica's id and state."""
    application = (details.get("applications") or {}).get(app) or {}
    deployments = application.get("deployments") or {}
    deployment = next(iter(deployments.values()), {})
    replicas = {
        str(r.get("replica_id")): plain(r.get("state")) for r in deployment.get("replicas") or []
    }
    states = Counter(replicas.values())
    return {
        "app_status": plain(application.get("status", "")) if application else "MISSING",
        "target": deployment.get("target_num_replicas"),
        "running": states.get("RUNNING", 0),
        "starting": states.get("STARTING", 0),
        "stopping": states.get("STOPPING", 0),
        "states": dict(states),
        "replicas": replicas,
    }


def merge_timeline(
    client_samples: list[dict[str, Any]], replica_samples: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pure: each client sample (t, phase, streams, in_flight) with the latest replica
    sample taken at or before it (both with `t` from the load start; replica fields
    None before the first)."""
    polled = sorted((s for s in replica_samples if "running" in s), key=lambda s: s["t"])
    out = []
    j = -1
    for c in sorted(client_samples, key=lambda s: s["t"]):
        while j + 1 < len(polled) and polled[j + 1]["t"] <= c["t"]:
            j += 1
        r = polled[j] if j >= 0 else {}
        out.append(
            {
                **c,
                "running": r.get("running"),
                "starting": r.get("starting"),
                "stopping": r.get("stopping"),
                "target": r.get("target"),
            }
        )
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000.0, 1)


def summarize_phases(
    trace: list[Phase], requests: list[Request], timeline: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pure: per phase, its requests (by send time), failures, TTFT p50/p99, output
    tokens/s over the phase's length, and the replicas seen during it."""
    out = []
    for p, start, end in phase_bounds(trace):
        reqs = [r for r in requests if r.phase == p.name]
        ok = [r for r in reqs if r.ok]
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        tokens = sum(r.tokens for r in ok)
        rows = [s for s in timeline if start <= s["t"] < end and s.get("running") is not None]
        running = [s["running"] for s in rows]
        out.append(
            {
                "phase": p.name,
                "start_s": start,
                "end_s": end,
                "streams": [p.streams_from, p.streams_to],
                "requests": len(reqs),
                "ok": len(ok),
                "failures": len(reqs) - len(ok),
                "error_samples": sorted({r.error for r in reqs if r.error})[:5],
                "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p99": _ms(percentile(ttfts, 99))},
                "output_tokens": tokens,
                "output_tok_s": round(tokens / p.duration_s, 1) if p.duration_s else None,
                "replicas_running": {
                    "min": min(running) if running else None,
                    "max": max(running) if running else None,
                    "end": running[-1] if running else None,
                },
                "replicas_target_max": max((s["target"] or 0 for s in rows), default=None),
                "stopping_seen": any((s.get("stopping") or 0) > 0 for s in rows),
            }
        )
    return out


def _listed(sample: dict[str, Any]) -> int:
    """Every replica the deployment lists: RUNNING, STARTING or STOPPING."""
    return int(sample["running"] + sample["starting"] + sample["stopping"])


def scale_events(
    timeline: list[dict[str, Any]], drop_s: float | None, min_replicas: int, max_replicas: int
) -> dict[str, Any]:
    """Pure: when the replicas followed the load.

    Returns:
        `up`: for k in 2..max_replicas, seconds from the load start to the first sample
        with target ≥ k (the decision) and with ≥ k RUNNING (the replica serving);
        `down`: for k from max_replicas - 1 to min_replicas, seconds from the load drop
        to the first sample after it with target ≤ k (the decision) and with ≤ k replicas
        listed at all (the others stopped and gone: RUNNING, STARTING and STOPPING
        counted); `max_running`, `running_at_end`, and every change of (running,
        starting, stopping, target) as `changes`.
    """
    rows = [s for s in timeline if s.get("running") is not None]

    def first(pred: Any, after: float = float("-inf")) -> float | None:
        for s in rows:
            if s["t"] >= after and pred(s):
                return float(s["t"])
        return None

    def rounded(x: float | None, base: float = 0.0) -> float | None:
        return None if x is None else round(x - base, 1)

    up = {}
    for k in range(min_replicas + 1, max_replicas + 1):
        up[str(k)] = {
            "target_s": rounded(first(lambda s, k=k: (s["target"] or 0) >= k)),
            "running_s": rounded(first(lambda s, k=k: s["running"] >= k)),
        }
    down = {}
    if drop_s is not None:
        for k in range(max_replicas - 1, min_replicas - 1, -1):
            down[str(k)] = {
                "target_s": rounded(
                    first(lambda s, k=k: s["target"] is not None and s["target"] <= k, drop_s),
                    drop_s,
                ),
                "replicas_s": rounded(
                    first(lambda s, k=k: _listed(s) <= k, drop_s),
                    drop_s,
                ),
            }
    changes = []
    last = None
    for s in rows:
        key = (s["running"], s["starting"], s["stopping"], s["target"])
        if key != last:
            changes.append(
                {
                    "t": s["t"],
                    "running": s["running"],
                    "starting": s["starting"],
                    "stopping": s["stopping"],
                    "target": s["target"],
                }
            )
            last = key
    return {
        "up": up,
        "down": down,
        "max_running": max((s["running"] for s in rows), default=None),
        "running_at_end": rows[-1]["running"] if rows else None,
        "changes": changes,
    }


def stopping_windows(replica_samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Pure: per replica id ever seen STOPPING, when it was last seen RUNNING before
    (None if never), first and last seen STOPPING, and first seen gone (None while still
    listed at the last sample)."""
    out: dict[str, dict[str, Any]] = {}
    last_running: dict[str, float] = {}
    samples = sorted((s for s in replica_samples if "replicas" in s), key=lambda s: s["t"])
    for s in samples:
        for rid, state in s["replicas"].items():
            if state == "RUNNING":
                last_running[rid] = s["t"]
            elif state == "STOPPING":
                w = out.setdefault(
                    rid,
                    {
                        "last_running_s": last_running.get(rid),
                        "first_s": s["t"],
                        "last_s": s["t"],
                        "gone_s": None,
                    },
                )
                w["last_s"] = s["t"]
        for rid, w in out.items():
            if w["gone_s"] is None and rid not in s["replicas"]:
                w["gone_s"] = s["t"]
    return out


def in_flight_while_stopping(
    requests: list[Request], windows: dict[str, dict[str, Any]]
) -> list[Request]:
    """Pure: the requests that were running at some moment a replica was STOPPING (sent
    before that replica was last seen STOPPING, ended after it was first seen so)."""
    spans = [(w["first_s"], w["gone_s"] or w["last_s"]) for w in windows.values()]
    return [r for r in requests if any(r.start < b and r.end > a for a, b in spans)]


def drain_report(requests: list[Request], windows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pure: the requests in flight while replicas were stopped, per stopped replica
    from when it was last seen RUNNING (the stop falls in the second after) to when it
    was seen gone, and how many of them failed."""
    per_replica = {}
    for rid, w in windows.items():
        since = w["last_running_s"] if w["last_running_s"] is not None else w["first_s"]
        until = w["gone_s"] if w["gone_s"] is not None else w["last_s"]
        during = [r for r in requests if r.start < until and r.end > since]
        per_replica[rid] = {
            **{k: (None if v is None else round(v, 1)) for k, v in w.items()},
            "requests_in_flight": len(during),
            "of_those_failed": sum(1 for r in during if not r.ok),
        }
    overlapping = in_flight_while_stopping(requests, windows)
    return {
        "replicas_stopped": per_replica,
        "requests_in_flight_while_a_replica_stopped": len(overlapping),
        "of_those_failed": sum(1 for r in overlapping if not r.ok),
    }


REQUEST_COLUMNS = ("client", "start", "end", "ttft", "status", "tokens", "phase")


def compact_requests(requests: list[Request]) -> dict[str, Any]:
    """Pure: every request as one row of REQUEST_COLUMNS (times rounded to the
    millisecond: a full trace is thousands of requests), and the failed ones' errors
    by row index."""
    rows = []
    errors = {}
    for i, r in enumerate(requests):
        rows.append(
            [
                r.client,
                round(r.start, 3),
                round(r.end, 3),
                None if r.ttft is None else round(r.ttft, 3),
                r.status,
                r.tokens,
                r.phase,
            ]
        )
        if not r.ok:
            errors[str(i)] = r.error or f"status {r.status}"
    return {"columns": list(REQUEST_COLUMNS), "rows": rows, "errors": errors}


def ttft_series(requests: list[Request], bucket_s: float = 1.0) -> list[dict[str, Any]]:
    """Pure: TTFT of the requests sent in each `bucket_s` window (p50, max, count) and
    their failures: the TTFT half of the trace plot."""
    buckets: dict[int, list[Request]] = {}
    for r in requests:
        buckets.setdefault(math.floor(r.start / bucket_s), []).append(r)
    out = []
    for b in sorted(buckets):
        reqs = buckets[b]
        ttfts = [r.ttft for r in reqs if r.ok and r.ttft is not None]
        out.append(
            {
                "t": round(b * bucket_s, 3),
                "sent": len(reqs),
                "failed": sum(1 for r in reqs if not r.ok),
                "ttft_ms_p50": _ms(percentile(ttfts, 50)),
                "ttft_ms_max": _ms(max(ttfts)) if ttfts else None,
            }
        )
    return out


# ---------------------------------------------------------------------------- load


def chat_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], rec: Request, t0: float
) -> Request:
    """Sends one streaming chat request and fills `rec` (times from `t0`,
    time.perf_counter())."""
    done = False
    usage: dict[str, Any] = {}
    try:
        async with client.stream(
            "POST", url, json=body, headers={"x-request-id": rec.request_id}
        ) as r:
            rec.status = r.status_code
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                rec.error = f"HTTP {r.status_code}: {text[:200]}"
                return rec
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if "error" in chunk:
                    rec.error = f"in-band: {str(chunk['error'])[:200]}"
                    return rec
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if rec.ttft is None and any(
                    (c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()
                ):
                    rec.ttft = now - t0 - rec.start
    except (TimeoutError, httpx.HTTPError, json.JSONDecodeError) as e:
        rec.error = f"{type(e).__name__}: {e}"[:200]
        return rec
    finally:
        rec.end = time.perf_counter() - t0
    rec.tokens = int(usage.get("completion_tokens") or 0)
    if not done:
        rec.error = "stream ended without [DONE]"
    elif rec.ttft is None:
        rec.error = "stream carried no text"
    else:
        rec.ok = True
    return rec


@dataclass
class LoadRun:
    """The load client's state and what it recorded."""

    trace: list[Phase]
    url: str
    model: str
    prompts: list[str]
    max_tokens: int
    request_timeout_s: float = 120.0
    requests: list[Request] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    wall_start: float = 0.0  # time.time() at the load start: the replica samples' zero

    async def run(self, progress: Any = None) -> None:
        peak = max((max(p.streams_from, p.streams_to) for p in self.trace), default=1)
        limits = httpx.Limits(max_connections=peak + 4, max_keepalive_connections=peak + 4)
        active: dict[int, bool] = {}
        tasks: dict[int, asyncio.Task[None]] = {}
        async with httpx.AsyncClient(timeout=self.request_timeout_s, limits=limits) as client:
            t0 = time.perf_counter()
            self.wall_start = time.time()

            async def worker(i: int) -> None:
                n = 0
                while active.get(i):
                    now = time.perf_counter() - t0
                    phase = phase_at(self.trace, now)
                    rec = Request(
                        request_id=f"as-{i}-{n}",
                        client=i,
                        start=now,
                        phase=phase.name if phase else "after",
                    )
                    prompt = self.prompts[(i * 7 + n) % len(self.prompts)]
                    n += 1
                    self.in_flight += 1
                    try:
                        await one_request(
                            client,
                            self.url,
                            chat_body(self.model, prompt, self.max_tokens),
                            rec,
                            t0,
                        )
                    finally:
                        self.in_flight -= 1
                    self.requests.append(rec)

            end = trace_length(self.trace)
            next_sample = 0.0
            while True:
                now = time.perf_counter() - t0
                if now >= end:
                    break
                target = streams_at(self.trace, now)
                for i in range(max(target, len(active))):
                    active[i] = i < target
                    if active[i] and (i not in tasks or tasks[i].done()):
                        tasks[i] = asyncio.create_task(worker(i))
                if now >= next_sample:
                    phase = phase_at(self.trace, now)
                    self.samples.append(
                        {
                            "t": round(now, 3),
                            "phase": phase.name if phase else None,
                            "streams": target,
                            "in_flight": self.in_flight,
                            "ok": sum(1 for r in self.requests if r.ok),
                            "failed": sum(1 for r in self.requests if not r.ok),
                        }
                    )
                    if progress is not None:
                        progress(self.samples[-1])
                    next_sample += 1.0
                await asyncio.sleep(0.25)
            for i in active:
                active[i] = False
            # Requests in flight at the end finish (bounded by the client's timeout).
            await asyncio.gather(*tasks.values(), return_exceptions=True)


# ---------------------------------------------------------------------------- poller


def poll_main(address: str, app: str, out: str, period_s: float) -> None:
    """The replica poller (`--poll`): a Ray driver on the private cluster (token auth
    from the environment), one JSON line per `period_s` with the app's replicas."""
    import ray
    from ray.serve.context import _get_global_client

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    client = _get_global_client()
    if client is None:
        raise SystemExit("no Serve controller on this cluster")
    with open(out, "a") as f:
        while True:
            t = time.time()
            try:
                sample = replica_sample(client.get_serve_details(), app)
            except Exception as e:  # keep polling: one failed read is a gap, not the end
                sample = {"error": f"{type(e).__name__}: {e}"[:300]}
            sample["t"] = t
            f.write(json.dumps(sample) + "\n")
            f.flush()
            time.sleep(max(0.0, period_s - (time.time() - t)))


def read_samples(path: Path, wall_start: float) -> list[dict[str, Any]]:
    """The poller's lines, `t` made relative to the load start."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            s = json.loads(line)
        except ValueError:
            continue  # a line cut by the poller's stop
        s["t"] = round(s["t"] - wall_start, 3)
        out.append(s)
    return out


def last_sample(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            s: dict[str, Any] = json.loads(line)
            return s
        except ValueError:
            continue
    return {}


# ---------------------------------------------------------------------------- report


def _f(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}" if 0 < abs(x) < 1 else f"{x:.1f}"
    return str(x)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_f(c) for c in cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# Autoscaling trace {report['started']}",
        "",
        f"Machine: {report['machine']}. Client: {report['client_scheduling']}.",
        f"Model {s['model']} ({s['model_source']}); max_tokens {s['max_tokens']}, ignore_eos; "
        f"Ray logical CPUs {s['ray_num_cpus']}; `deployment`: `{json.dumps(s['deployment'])}`.",
        "Trace: "
        + ", ".join(
            f"{p['name']} {p['duration_s']:g} s "
            + (
                f"{p['streams_from']}→{p['streams_to']}"
                if p["streams_from"] != p["streams_to"]
                else f"{p['streams_from']}"
            )
            for p in report["trace"]
        )
        + " streams.",
        "",
    ]
    if report.get("failure"):
        lines += [f"**FAILED**: {report['failure'][:1500]}", ""]
    phases = report.get("phases") or []
    if phases:
        lines += [
            _row(
                [
                    "phase",
                    "s",
                    "streams",
                    "requests",
                    "failures",
                    "TTFT p50 ms",
                    "TTFT p99 ms",
                    "out tok/s",
                    "replicas running min / max / end",
                    "target max",
                    "STOPPING seen",
                ]
            ),
            "| --- | --: | --- | --: | --: | --: | --: | --: | --- | --: | --- |",
        ]
        for p in phases:
            rr = p["replicas_running"]
            streams = (
                f"{p['streams'][0]}→{p['streams'][1]}"
                if p["streams"][0] != p["streams"][1]
                else str(p["streams"][0])
            )
            lines.append(
                _row(
                    [
                        p["phase"],
                        f"{p['end_s'] - p['start_s']:g}",
                        streams,
                        p["requests"],
                        p["failures"],
                        p["ttft_ms"]["p50"],
                        p["ttft_ms"]["p99"],
                        p["output_tok_s"],
                        f"{_f(rr['min'])} / {_f(rr['max'])} / {_f(rr['end'])}",
                        p["replicas_target_max"],
                        "yes" if p["stopping_seen"] else "no",
                    ]
                )
            )
        errors = [e for p in phases for e in p["error_samples"]]
        if errors:
            lines += ["", "Errors (samples): " + "; ".join(errors[:5])]
    ev = report.get("scale")
    if ev:
        up = ", ".join(
            f"≥ {k}: target at {_f(v['target_s'])} s, running at {_f(v['running_s'])} s"
            for k, v in ev["up"].items()
        )
        down = ", ".join(
            f"≤ {k}: target at +{_f(v['target_s'])} s, ≤ {k} replicas left at "
            f"+{_f(v['replicas_s'])} s"
            for k, v in ev["down"].items()
        )
        lines += [
            "",
            f"Replicas: max RUNNING {_f(ev['max_running'])}, at the end {_f(ev['running_at_end'])}.",
            f"Scale-up, from the load start: {up or '-'}.",
            f"Scale-down, from the load drop (t = {_f(report.get('drop_s'))} s): {down or '-'}.",
        ]
    drain = report.get("drain")
    if drain:
        lines += [
            "",
            f"Drain: {drain['requests_in_flight_while_a_replica_stopped']} requests were in "
            f"flight while a replica was STOPPING, {drain['of_those_failed']} of them failed.",
        ]
        for rid, w in drain["replicas_stopped"].items():
            lines.append(
                f"- replica `{rid}`: last RUNNING at {_f(w['last_running_s'])} s, STOPPING seen "
                f"{_f(w['first_s'])}–{_f(w['last_s'])} s, gone at {_f(w['gone_s'])} s; "
                f"{w['requests_in_flight']} requests in flight from its last RUNNING sample to "
                f"its end, {w['of_those_failed']} failed"
            )
    timeline = report.get("timeline") or []
    if timeline:
        ttft = {round(b["t"]): b for b in report.get("ttft_series") or []}
        lines += [
            "",
            "Every 10 s (full timeline, 1 s, in the JSON):",
            "",
            _row(
                [
                    "t s",
                    "phase",
                    "streams",
                    "in flight",
                    "running",
                    "starting",
                    "stopping",
                    "target",
                    "TTFT p50 ms (sent in the 10 s)",
                ]
            ),
            "| --: | --- | --: | --: | --: | --: | --: | --: | --: |",
        ]
        for row in timeline:
            t = int(row["t"])
            if t % 10 or (lines[-1].startswith(f"| {t} |")):
                continue
            ttfts = [
                b["ttft_ms_p50"]
                for k, b in ttft.items()
                if t <= k < t + 10 and b["ttft_ms_p50"] is not None
            ]
            lines.append(
                _row(
                    [
                        t,
                        row["phase"],
                        row["streams"],
                        row["in_flight"],
                        row["running"],
                        row["starting"],
                        row["stopping"],
                        row["target"],
                        round(percentile(ttfts, 50), 1) if ttfts else None,
                    ]
                )
            )
    stop = report.get("stop") or {}
    if stop:
        lines += [
            "",
            f"Stop and leak check: stopped in {stop.get('stop_s')} s, "
            + ("no process left" if stop.get("clean") else f"LEFT: {stop.get('left_after_kill')}"),
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def deployment_options(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """The LLM application's `deployment:` for this run (module docstring)."""
    return {
        "autoscaling_config": {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
            "look_back_period_s": args.look_back_s,
        },
        "max_ongoing_requests": args.max_ongoing,
        "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}},
    }


def wait_for_replicas(path: Path, running: int, timeout_s: float) -> None:
    """Until the poller reports exactly `running` RUNNING replicas and none starting or
    stopping."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = last_sample(path)
        if s.get("running") == running and not s.get("starting") and not s.get("stopping"):
            return
        time.sleep(1)
    raise TimeoutError(f"not {running} replicas RUNNING after {timeout_s} s: {last_sample(path)}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from llm_bench import machine_info, resolve_model

    trace = build_trace(
        ramp_s=args.ramp_s,
        ramp_from=args.ramp_from,
        ramp_to=args.ramp_to,
        hold_s=args.hold_s,
        low_s=args.low_s,
        low_streams=args.low_streams,
        idle_s=args.idle_s,
    )
    started = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = resolve_model("tiny")
    machine = machine_info()
    server = Server("ours", model, threads_bind=args.threads_bind, ray_num_cpus=args.ray_num_cpus)
    deployment = deployment_options(args, server.model_env())
    # The engine on Ray's one thread per replica (cpu_threads unset), not every core.
    server.app_args = {"deployment": deployment, "engine": {"cpu_threads": None}}
    report: dict[str, Any] = {
        "started": started,
        "argv": sys.argv[1:],
        "machine": f"{machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB; "
        f"vLLM {machine['vllm']}, Ray {machine['ray']}",
        "machine_info": machine,
        "settings": {
            "model": model.name,
            "model_source": model.source,
            "engine_kwargs": model.engine_kwargs,
            "max_tokens": args.max_tokens,
            "ray_num_cpus": args.ray_num_cpus,
            "deployment": {k: v for k, v in deployment.items() if k != "ray_actor_options"},
            "num_cpus_per_replica": 1,
            "request_timeout_s": args.request_timeout_s,
        },
        "trace": [asdict(p) for p in trace],
        "drop_s": drop_time(trace),
    }
    t_start = time.monotonic()
    load: LoadRun | None = None
    samples_path: Path | None = None
    try:
        server.start()
        assert server.workdir is not None
        gcs_port = server.procs[0].args[server.procs[0].args.index("--port") + 1]
        report["listed_after_s"] = round(server.wait_ready(args.start_timeout), 1)
        prompts = make_prompts(64, 24, seed=0)
        asyncio.run(
            warm_up(server.base_url, model.name, prompts, args.max_tokens, args.start_timeout)
        )
        samples_path = server.workdir / "replicas.jsonl"
        server._spawn(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--poll",
                f"127.0.0.1:{gcs_port}",
                "--poll-out",
                str(samples_path),
            ],
            "poller.log",
            "poller",
        )
        wait_for_replicas(samples_path, args.min_replicas, timeout_s=120)
        report["ready_after_s"] = round(time.monotonic() - t_start, 1)
        # After every server process has started (none inherits it; reset on fork).
        report["client_scheduling"] = (
            "normal (--normal-client)" if args.normal_client else prioritize_client()
        )
        print(
            f"ready after {report['ready_after_s']} s; load for {trace_length(trace):g} s",
            flush=True,
        )
        load = LoadRun(
            trace=trace,
            url=f"{server.base_url}/chat/completions",
            model=model.name,
            prompts=prompts,
            max_tokens=args.max_tokens,
            request_timeout_s=args.request_timeout_s,
        )
        path = samples_path

        def progress(sample: dict[str, Any]) -> None:
            server.check_alive()
            if int(sample["t"]) % 10:
                return
            r = last_sample(path)
            print(
                f"  t={sample['t']:6.1f} {sample['phase'] or '-':5} streams={sample['streams']:2} "
                f"in-flight={sample['in_flight']:2} replicas running={r.get('running')} "
                f"starting={r.get('starting')} stopping={r.get('stopping')} "
                f"target={r.get('target')}  ok={sample['ok']} failed={sample['failed']}",
                flush=True,
            )

        asyncio.run(load.run(progress))
    except (Exception, KeyboardInterrupt) as e:
        report["failure"] = f"{type(e).__name__}: {e}"[:4000]
        print(f"FAILED: {report['failure'][:2000]}", flush=True)
    finally:
        if load is not None and samples_path is not None:
            replica_samples = read_samples(samples_path, load.wall_start)
            timeline = merge_timeline(load.samples, replica_samples)
            windows = stopping_windows(replica_samples)
            report.update(
                {
                    "phases": summarize_phases(trace, load.requests, timeline),
                    "scale": scale_events(
                        timeline, report["drop_s"], args.min_replicas, args.max_replicas
                    ),
                    "drain": drain_report(load.requests, windows),
                    "timeline": timeline,
                    "ttft_series": ttft_series(load.requests),
                    "replica_samples": replica_samples,
                    "requests": compact_requests(load.requests),
                    "requests_total": len(load.requests),
                    "failures_total": sum(1 for r in load.requests if not r.ok),
                    "wrong_token_count": sum(
                        1 for r in load.requests if r.ok and r.tokens != args.max_tokens
                    ),
                }
            )
        report["stop"] = server.stop()
        if server.workdir and args.keep_logs:
            dest = Path(args.keep_logs) / started
            dest.mkdir(parents=True, exist_ok=True)
            for log in server.workdir.glob("*.log"):
                shutil.copy(log, dest / log.name)
            for log in (server.workdir / "ray").rglob("logs/serve/*.log"):
                shutil.copy(log, dest / log.name)
        server.cleanup_files()
    report["total_s"] = round(time.monotonic() - t_start, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run of the same shape: ramp 30 s, hold 40 s, low 60 s, idle 20 s",
    )
    parser.add_argument("--ramp-s", type=float, default=None, help="ramp length (120; quick 30)")
    parser.add_argument("--ramp-from", type=int, default=1)
    parser.add_argument("--ramp-to", type=int, default=24, help="streams at the top of the ramp")
    parser.add_argument("--hold-s", type=float, default=None, help="hold at the top (60; quick 40)")
    parser.add_argument("--low-s", type=float, default=None, help="low phase (90; quick 60)")
    parser.add_argument("--low-streams", type=int, default=2, help="streams in the low phase")
    parser.add_argument(
        "--idle-s", type=float, default=None, help="no load at the end (45; quick 20)"
    )
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--target-ongoing", type=float, default=8)
    parser.add_argument("--max-ongoing", type=int, default=16, help="max_ongoing_requests")
    parser.add_argument("--upscale-delay-s", type=float, default=10)
    parser.add_argument("--downscale-delay-s", type=float, default=20)
    parser.add_argument("--look-back-s", type=float, default=10, help="look_back_period_s")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--request-timeout-s", type=float, default=120.0)
    parser.add_argument("--ray-num-cpus", type=int, default=8)
    parser.add_argument("--threads-bind", default="auto", help="VLLM_CPU_OMP_THREADS_BIND")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument(
        "--normal-client", action="store_true", help="no real-time priority for the client"
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--keep-logs", default=None, help="copy the server's and the replicas' logs here"
    )
    parser.add_argument("--poll", default=None, help=argparse.SUPPRESS)  # the poller's GCS
    parser.add_argument("--poll-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll:
        poll_main(args.poll, APP, args.poll_out, 1.0)
        return 0
    for name, full, quick in (
        ("ramp_s", 120.0, 30.0),
        ("hold_s", 60.0, 40.0),
        ("low_s", 90.0, 60.0),
        ("idle_s", 45.0, 20.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    signal.signal(signal.SIGTERM, _interrupt)  # so the server is stopped
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"autoscale-{report['started']}"
    # Compact: thousands of requests and timeline samples.
    Path(f"{stem}.json").write_text(json.dumps(report, separators=(",", ":")) + "\n")
    md = markdown(report)
    Path(f"{stem}.md").write_text(md)
    print(md)
    print(f"wrote {stem}.json, .md")
    ok = (
        not report.get("failure")
        and report.get("failures_total", 1) == 0
        and report["stop"].get("clean", False)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
