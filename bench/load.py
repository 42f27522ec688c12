"""Load generation and statistics for bench/llm_bench.py.

One closed-loop level: `concurrency` clients, each sending its next request when
the previous one ends, over a fixed seeded prompt set, `/completions` with a fixed
`max_tokens` and `ignore_eos`, so every server generates the same number of tokens.
Raw httpx and hand-parsed SSE keep the client light (it shares the CPUs with the
server on a small machine) and the timing exact.

Streaming: TTFT is the arrival of the first SSE chunk that carries text; the
inter-token latencies (ITL) are the gaps between later text-carrying chunks (a
chunk may hold several tokens when a server coalesces, which shows up as fewer,
longer gaps); TPOT is (last text chunk - first text chunk) / (tokens - 1).
Output tokens come from the server's `usage` (stream_options.include_usage).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from dataclasses import dataclass, field

import httpx
from tqdm import tqdm

_WORDS = [
    "the",
    "a",
    "river",
    "mountain",
    "city",
    "market",
    "engine",
    "cloud",
    "light",
    "stone",
    "garden",
    "window",
    "quiet",
    "rapid",
    "ancient",
    "modern",
    "bright",
    "simple",
    "careful",
    "golden",
    "winter",
    "summer",
    "travels",
    "builds",
    "finds",
    "carries",
    "follows",
    "watches",
    "opens",
    "remembers",
    "explains",
    "under",
    "over",
    "through",
    "beside",
    "after",
    "before",
    "while",
    "because",
    "and",
    "but",
]


def prioritize_client() -> str:
    """Puts this process's load client ahead of the servers' processes on the CPUs.

    On a small machine the client shares the cores with the server under test. Measured
    2026-12-02 (Gemma, 16 streams, `ours`, 45 s, per-chunk arrival times): the client
    used 1.3 s of CPU but waited 17.2 s for one (/proc/self/schedstat), its event loop
    stalled up to 4.4 s, and the chunks that piled up meanwhile were read as one burst
    (every long gap followed by ~0 ms ones): ITL p90/p99 and TTFT then measured the
    client's scheduling, not the server. Real-time FIFO priority 1 brought the wait to
    0.1 s and the bursts to none; the client's own CPU is ~3 % of one core at 16
    streams, so the server loses almost nothing. Reset on fork: no server process
    started from here inherits it. Needs CAP_SYS_NICE (root here); without it the
    client stays normal and the report says so.

    Returns:
        What was set, for the report: "SCHED_FIFO 1" or "normal (<why>)".
    """
    try:
        policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, policy, os.sched_param(1))
    except (AttributeError, OSError) as e:  # not Linux, or not permitted
        return f"normal ({type(e).__name__})"
    return "SCHED_FIFO 1"


def make_prompts(n: int, words: int, seed: int = 0) -> list[str]:
    """`n` distinct pseudo-sentences of `words` words each, the same for a seed."""
    rng = random.Random(seed)
    return [f"Story {i}: " + " ".join(rng.choice(_WORDS) for _ in range(words)) for i in range(n)]


@dataclass
class Result:
    ok: bool
    latency_s: float = 0.0
    ttft_s: float | None = None
    itls_s: list[float] = field(default_factory=list)
    tpot_s: float | None = None
    completion_tokens: int = 0
    text_chunks: int = 0
    error: str | None = None


def _body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _one(client: httpx.AsyncClient, url: str, body: dict) -> Result:
    start = time.perf_counter()
    try:
        if not body["stream"]:
            r = await client.post(url, json=body)
            end = time.perf_counter()
            if r.status_code != 200:
                return Result(ok=False, error=f"HTTP {r.status_code}: {r.text[:200]}")
            usage = r.json().get("usage") or {}
            return Result(
                ok=True,
                latency_s=end - start,
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        times: list[float] = []
        usage: dict = {}
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return Result(ok=False, error=f"HTTP {r.status_code}: {text[:200]}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if "error" in chunk:
                    return Result(ok=False, error=f"in-band: {str(chunk['error'])[:200]}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if any(c.get("text") for c in chunk.get("choices") or ()):
                    times.append(now)
        end = time.perf_counter()
    except (TimeoutError, httpx.HTTPError, json.JSONDecodeError) as e:
        return Result(ok=False, error=f"{type(e).__name__}: {e}"[:200])
    tokens = int(usage.get("completion_tokens") or 0)
    if not times:
        return Result(ok=False, error="stream carried no text")
    return Result(
        ok=True,
        latency_s=end - start,
        ttft_s=times[0] - start,
        itls_s=[b - a for a, b in itertools.pairwise(times)],
        tpot_s=(times[-1] - times[0]) / (tokens - 1) if tokens > 1 else None,
        completion_tokens=tokens,
        text_chunks=len(times),
    )


async def run_level(
    base_url: str,
    model: str,
    prompts: list[str],
    *,
    concurrency: int,
    requests: int,
    max_tokens: int,
    stream: bool,
    time_budget_s: float,
    request_timeout_s: float = 300.0,
    label: str | None = None,
) -> dict:
    """Sends `requests` requests from `concurrency` clients (no new request starts
    after `time_budget_s`); returns the level's summary (see `summarize`).

    With a `label`, a progress bar (tqdm, on stderr, only on a terminal) counts the
    finished requests and their errors."""
    url = f"{base_url}/completions"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[Result] = []
    next_index = 0
    bar = tqdm(
        total=requests, desc=label, unit="req", leave=False, disable=True if label is None else None
    )
    async with httpx.AsyncClient(timeout=request_timeout_s, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + time_budget_s

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                body = _body(model, prompts[i % len(prompts)], max_tokens, stream)
                results.append(await _one(client, url, body))
                bar.update()
                if not results[-1].ok:
                    bar.set_postfix(errors=sum(1 for r in results if not r.ok))

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            bar.close()
        wall = time.perf_counter() - start
    return summarize(
        results,
        wall,
        concurrency=concurrency,
        stream=stream,
        max_tokens=max_tokens,
        planned=requests,
    )


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000.0, 2)


def summarize(
    results: list[Result],
    wall_s: float,
    *,
    concurrency: int,
    stream: bool,
    max_tokens: int,
    planned: int,
) -> dict:
    ok = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    itls = [x for r in ok for x in r.itls_s]
    tpots = [r.tpot_s for r in ok if r.tpot_s is not None]
    latencies = [r.latency_s for r in ok]
    errors = [r.error for r in results if not r.ok]
    return {
        "mode": "stream" if stream else "non-stream",
        "concurrency": concurrency,
        "requests_planned": planned,
        "requests_ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "wrong_token_count": sum(1 for r in ok if r.completion_tokens != max_tokens),
        "wall_s": round(wall_s, 3),
        "output_tokens": tokens,
        "output_tok_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "req_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p99": _ms(percentile(ttfts, 99))},
        "itl_ms": {f"p{q}": _ms(percentile(itls, q)) for q in (50, 90, 99)},
        "tpot_ms_mean": _ms(sum(tpots) / len(tpots)) if tpots else None,
        "latency_ms": {
            "p50": _ms(percentile(latencies, 50)),
            "p99": _ms(percentile(latencies, 99)),
        },
        "text_chunks_per_request": (
            round(sum(r.text_chunks for r in ok) / len(ok), 1) if ok and stream else None
        ),
    }


async def warm_up(
    base_url: str, model: str, prompts: list[str], max_tokens: int, timeout_s: float
) -> None:
    """Retries one small request until it succeeds (the first may wait for the engine),
    then a few concurrent streams, so compilation, caches and connections are warm."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        async with httpx.AsyncClient(timeout=max(5.0, deadline - time.monotonic())) as c:
            r = await _one(c, f"{base_url}/completions", _body(model, prompts[0], 4, stream=False))
        if r.ok:
            break
        last = r.error or "?"
        await asyncio.sleep(2)
    else:
        raise TimeoutError(f"warm-up never succeeded: {last}")
    summary = await run_level(
        base_url,
        model,
        prompts,
        concurrency=4,
        requests=8,
        max_tokens=max_tokens,
        stream=True,
        time_budget_s=max(10.0, deadline - time.monotonic()),
    )
    if summary["errors"]:
        raise RuntimeError(f"warm-up errors: {summary['error_samples']}")
