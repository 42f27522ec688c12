"""A storm of clients that hang up at random moments (before the request reaches the
ingress, while it waits for the model, during prefill, just after the first token),
over streamed and whole chat and completions requests, leaves nothing behind: no
request in the engines, no slot held in the ingress, and a model's whole concurrency
limit usable at once afterwards."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time

import httpx
import pytest

from tests.conftest import TINY_APP, TINY_MODEL
from tests.e2e.conftest import LIMIT, LIMITED_APP, LIMITED_MODEL

pytestmark = pytest.mark.e2e

# The shared `tiny/limited` model (tests/e2e/conftest.py): its small limit is cheap to
# check whole ("the whole limit at once") and the storm keeps it full (its requests also
# take the 429 path).
STORM_APP, STORM_MODEL, STORM_LIMIT = LIMITED_APP, LIMITED_MODEL, LIMIT
CLIENTS, AT_ONCE = 300, 50
STORM_BOUND_S = 180  # the whole storm; each client lives at most TTFT + 100 ms
SEED = 20240601
# Long enough that no request ends on its own before its client hangs up.
MAX_TOKENS = 400


def _unfinished(handle) -> int:
    """The engine's own count of requests it still holds (vLLM's output processor)."""
    return handle.stats.remote().result()["unfinished_requests"]


def _ttft(base: str, model: str) -> float:
    """The median time to the first streamed chunk of a lone request."""
    samples = []
    with httpx.Client(timeout=60) as http:
        for _ in range(3):
            start = time.monotonic()
            body = {"model": model, "prompt": "hi", "max_tokens": 1, "stream": True}
            with http.stream("POST", f"{base}/completions", json=body) as r:
                assert r.status_code == 200
                next(line for line in r.iter_lines() if line.startswith("data: "))
                samples.append(time.monotonic() - start)
    return sorted(samples)[1]


def _request(i: int, rng: random.Random) -> tuple[str, str, dict]:
    """(label, path, body) of client i: half to each model, every route and mode."""
    model = TINY_MODEL if i % 2 == 0 else STORM_MODEL
    chat = rng.random() < 0.5
    stream = rng.random() < 0.5
    body: dict = {"model": model, "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": f"storm {i}"}]
    else:
        body["prompt"] = f"storm {i}"
    label = f"{'chat' if chat else 'completions'}{'-stream' if stream else ''}"
    return label, "/chat/completions" if chat else "/completions", body


async def _storm(base: str, window_s: float) -> collections.Counter[str]:
    rng = random.Random(SEED)
    plans = [(_request(i, rng), rng.uniform(0, window_s)) for i in range(CLIENTS)]
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(plan: tuple[str, str, dict], leave_after: float) -> str:
        label, path, body = plan
        # A client of its own: leaving its block closes the connection, which is what
        # the server sees when a real client hangs up.
        async with gate, httpx.AsyncClient(timeout=60) as http:

            async def send() -> int:
                async with http.stream("POST", f"{base}{path}", json=body) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    return r.status_code

            task = asyncio.ensure_future(send())
            done, _ = await asyncio.wait({task}, timeout=leave_after)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return f"{label}: left"
            return f"{label}: {task.result()}"

    outcomes = await asyncio.gather(*(one(plan, delay) for plan, delay in plans))
    return collections.Counter(outcomes)


def _running_gauges(metrics_url: str) -> dict[str, list[float]]:
    """The ingress's in-flight gauge per deploy_id (one line per ingress replica)."""
    out: dict[str, list[float]] = {TINY_APP: [], STORM_APP: []}
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        if not line.startswith("ray_openai_serve_running_requests{"):
            continue
        for app in out:
            if f'deploy_id="{app}"' in line:
                out[app].append(float(line.rsplit(" ", 1)[1]))
    return out


def test_disconnect_storm_leaves_nothing_behind(
    openai_stack, tiny_app_handle, limited_app, metrics_url
):
    handles = {TINY_APP: tiny_app_handle, STORM_APP: limited_app}
    assert all(_unfinished(h) == 0 for h in handles.values())
    ttft = max(_ttft(openai_stack, TINY_MODEL), _ttft(openai_stack, STORM_MODEL))
    window = ttft + 0.1

    start = time.monotonic()
    outcomes = asyncio.run(asyncio.wait_for(_storm(openai_stack, window), STORM_BOUND_S))
    storm_s = time.monotonic() - start
    left = time.monotonic()

    # Every client either left, or was answered before it could (a 429 at the storm
    # model's limit); never a 5xx.
    for outcome in outcomes:
        assert outcome.endswith((": left", ": 200", ": 429")), outcomes

    # The engines drop every request of a client that left, at once.
    drained: dict[str, float] = {}
    for app, handle in handles.items():
        while _unfinished(handle) and time.monotonic() - left < 10:
            time.sleep(0.05)
        drained[app] = time.monotonic() - left
        assert _unfinished(handle) == 0, f"{app}: the engine kept requests of gone clients"
    assert max(drained.values()) < 2.0, drained

    # The ingress holds no slot: its in-flight gauge reads 0 for both models (the
    # export lags by a few seconds, hence the wait).
    gauges: dict[str, list[float]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gauges = _running_gauges(metrics_url)
        if all(values and not any(values) for values in gauges.values()):
            break
        time.sleep(0.5)
    assert all(values and not any(values) for values in gauges.values()), gauges

    # ...and the storm model's whole limit is usable at once.
    async def at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(i: int) -> int:
                body = {"model": STORM_MODEL, "prompt": f"after {i}", "max_tokens": 50}
                return (await http.post(f"{openai_stack}/completions", json=body)).status_code

            return await asyncio.gather(*(one(i) for i in range(STORM_LIMIT)))

    codes = asyncio.run(at_once())
    print(
        f"\n{CLIENTS} clients ({AT_ONCE} at once), leaving within {window * 1000:.0f} ms "
        f"(TTFT {ttft * 1000:.0f} ms + 100 ms), seed {SEED}: storm took {storm_s:.1f} s\n"
        f"outcomes: {dict(sorted(outcomes.items()))}\n"
        f"engines empty after: {', '.join(f'{a} {s:.2f} s' for a, s in drained.items())}\n"
        f"ingress running_requests gauges: {gauges}\n"
        f"{STORM_LIMIT} simultaneous requests at the limit afterwards: {codes}"
    )
    assert codes == [200] * STORM_LIMIT


def test_a_client_cannot_switch_off_disconnect_handling(openai_stack):
    """Serve's proxy obeys `x-request-disconnect-disabled: ?1` (and a zero
    `x-request-timeout-seconds`) from anyone; the ingress refuses such requests before
    any model sees them."""
    body = {"model": TINY_MODEL, "prompt": "x", "max_tokens": 2}
    for header, value in (
        ("x-request-disconnect-disabled", "?1"),
        ("x-request-timeout-seconds", "0"),
    ):
        r = httpx.post(
            f"{openai_stack}/completions", json=body, headers={header: value}, timeout=30
        )
        assert r.status_code == 400, (header, r.text)
        assert r.json()["error"]["code"] == "unsupported_header"
