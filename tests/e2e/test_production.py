"""Production safety through real Serve + vLLM + HTTP: API keys, per-model limits,
client disconnects at scale, a killed replica, a dead engine, load, and metrics."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import BEHIND_HAPROXY, TINY_APP, TINY_MODEL, delete_app
from tests.e2e.conftest import LIMIT, LIMITED_APP, LIMITED_MODEL
from tests.e2e.internals import assert_no_internals

pytestmark = pytest.mark.e2e

KEYS = ("sk-test-one", "sk-test-two")
KEY_LIMIT = 2  # the secure ingress's auth.max_concurrent_requests_per_key


def _key_id(key: str) -> str:
    """How a key is named in metrics: the first 8 hex characters of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _replicas(app: str) -> list[dict]:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deps = details["applications"][app]["deployments"]
    return [r for d in deps.values() for r in d["replicas"]]


def _running_replica_pids(app: str) -> list[int]:
    return [r["pid"] for r in _replicas(app) if str(r["state"]).endswith("RUNNING")]


def _wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def secure_base(openai_stack):
    """A second ingress with auth on (its defaults: /metrics behind the key too), a
    per-key limit, under /secure, keys from its environment."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(
        build_app(
            {
                "auth": {"max_concurrent_requests_per_key": KEY_LIMIT},
                "deployment": {
                    "name": "SecureIngress",
                    "ray_actor_options": {
                        "runtime_env": {"env_vars": {"OPENAI_SERVE_API_KEYS": ",".join(KEYS)}}
                    },
                },
            }
        ),
        name="openai-secure",
        route_prefix="/secure",
    )
    yield openai_stack.replace("/v1/openai", "/secure/v1/openai")
    delete_app("openai-secure")


# --- API keys --------------------------------------------------------------------


def test_api_keys(secure_base):
    health = secure_base.replace("/v1/openai", "/health")
    assert httpx.get(health).status_code == 200  # health needs no key
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic sk-test-one"},
        {"Authorization": f"Bearer {KEYS[0]}x"},
    ):
        r = httpx.get(f"{secure_base}/models", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
    for key in KEYS:
        r = httpx.get(f"{secure_base}/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["object"] == "list"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secure_base, api_key="nope", max_retries=0).models.list()
    good = openai.OpenAI(base_url=secure_base, api_key=KEYS[1], max_retries=0)
    # ignore_eos: the tiny model samples at random and may pick EOS first.
    r = good.completions.create(
        model=TINY_MODEL, prompt="hi", max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 2


def test_per_key_limit_is_a_shaped_429_for_that_key_only(secure_base):
    async def run():
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(key):
                return await http.post(
                    f"{secure_base}/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "model": TINY_MODEL,
                        "prompt": "x",
                        "max_tokens": 300,
                        "ignore_eos": True,
                    },
                )

            return await asyncio.gather(*(one(KEYS[0]) for _ in range(KEY_LIMIT + 2)), one(KEYS[1]))

    *first_key, other_key = asyncio.run(run())
    codes = sorted(r.status_code for r in first_key)
    print(f"\nper-key limit {KEY_LIMIT}: codes {codes}, other key {other_key.status_code}")
    assert codes == [200] * KEY_LIMIT + [429] * 2
    assert other_key.status_code == 200  # another key is not held back
    for r in first_key:
        if r.status_code == 429:
            error = r.json()["error"]
            assert error["code"] == "rate_limited" and "API key" in error["message"]
            assert KEYS[0] not in r.text
            assert int(r.headers["retry-after"]) >= 1


# --- limits ----------------------------------------------------------------------


def test_concurrency_limit_is_a_shaped_429(openai_stack, limited_app):
    async def run():
        async with httpx.AsyncClient(timeout=120) as http:

            async def one():
                return await http.post(
                    f"{openai_stack}/completions",
                    json={
                        "model": LIMITED_MODEL,
                        "prompt": "x",
                        "max_tokens": 300,
                        "ignore_eos": True,
                    },
                )

            return await asyncio.gather(*(one() for _ in range(LIMIT + 6)))

    responses = asyncio.run(run())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= LIMIT and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"
            assert_no_internals(r.text)


@pytest.fixture(scope="module")
def queued_app(openai_stack):
    """One replica that takes one request at a time and queues one more; the engine is
    a slow stand-in (tests/fakes.py): what is tested is Serve's queue and our shaping."""
    from ray import serve

    from deployments.llm.builder import build_app_with_engine
    from tests.fakes import SlowEngine

    app = build_app_with_engine(
        {
            "model": "test/queued",
            "model_source": "/tmp",
            "deployment": {
                "max_ongoing_requests": 1,
                "max_queued_requests": 1,
                "ray_actor_options": {"num_cpus": 0},
            },
        },
        engine_cls=SlowEngine,
    )
    serve.run(app, name="queued", route_prefix=None)
    yield
    delete_app("queued")


def test_full_serve_queue_is_a_shaped_429(openai_stack, queued_app):
    async def run():
        async with httpx.AsyncClient(timeout=60) as http:

            async def one():
                return await http.post(
                    f"{openai_stack}/completions",
                    json={"model": "test/queued", "prompt": "x", "max_tokens": 5},
                )

            return await asyncio.gather(*(one() for _ in range(6)))

    responses = asyncio.run(run())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
            assert_no_internals(r.text)


def test_oversized_headers_are_refused_not_hung(openai_stack):
    huge = {"x-big": "a" * 200_000}
    many = {f"x-h{i}": "v" for i in range(150)}
    for headers in (huge, many):
        r = httpx.get(f"{openai_stack}/models", headers=headers, timeout=30)
        if BEHIND_HAPROXY and headers is huge:  # over HAProxy's buffer: its own 400
            assert r.status_code == 400, r.text[:300]
            assert_no_internals(r.text)
        else:
            assert r.status_code == 431
            assert r.json()["error"]["code"] == "request_header_fields_too_large"
    # Within HAProxy's bounds, over the ingress's (32 KB): the ingress's 431 either way.
    r = httpx.get(f"{openai_stack}/models", headers={"x-big": "a" * 40_000}, timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (431, "request_header_fields_too_large")
    assert httpx.get(f"{openai_stack}/models", timeout=30).status_code == 200


def test_caps_are_400(openai_stack):
    r = httpx.post(
        f"{openai_stack}/completions", json={"model": TINY_MODEL, "prompt": "x", "n": 17}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


# --- faults ----------------------------------------------------------------------


def test_hundred_disconnects_leave_nothing_running(openai_stack, tiny_app_handle, metrics_url):
    def unfinished() -> int:
        return tiny_app_handle.stats.remote().result()["unfinished_requests"]

    async def open_and_leave():
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(i):
                body = {
                    "model": TINY_MODEL,
                    "prompt": f"story {i}",
                    "max_tokens": 1500,
                    "ignore_eos": True,
                    "stream": True,
                }
                async with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            return  # leaving the block closes the connection

            await asyncio.gather(*(one(i) for i in range(100)))

    asyncio.run(open_and_leave())
    left = time.monotonic()
    took = _wait(lambda: unfinished() == 0, 10, "the engine to drop aborted requests")
    print(f"\n100 disconnects: engine empty {took:.2f} s after the last client left")
    assert took < 2.0

    # The same count, as exported to Prometheus.
    def gauge_zero() -> bool:
        text = httpx.get(metrics_url).text
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("ray_openai_serve_engine_unfinished_requests")
            and f'deploy_id="{TINY_APP}"' in line
        ]
        return bool(lines) and all(float(line.rsplit(" ", 1)[1]) == 0 for line in lines)

    _wait(gauge_zero, 30, "the exported gauge to read 0")
    assert time.monotonic() - left < 60


def test_killed_replica_under_load(openai_stack, limited_app):
    """SIGKILL the model replica while streams run: every client ends within a bound
    (completed, or a retryable error), Serve restores the replica, traffic recovers."""
    (pid,) = _running_replica_pids(LIMITED_APP)

    async def load():
        async with httpx.AsyncClient(timeout=90) as http:

            async def one(i):
                body = {
                    "model": LIMITED_MODEL,
                    "prompt": f"s{i}",
                    "max_tokens": 400,
                    "ignore_eos": True,
                    "stream": True,
                }
                try:
                    async with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                        if r.status_code != 200:
                            return ("status", r.status_code)
                        lines = [
                            line async for line in r.aiter_lines() if line.startswith("data: ")
                        ]
                        if lines[-1] != "data: [DONE]":
                            return ("malformed", lines[-1])
                        return (
                            ("error", None)
                            if any('"error"' in line for line in lines)
                            else ("ok", None)
                        )
                except httpx.TimeoutException:
                    return ("hung", None)

            tasks = [asyncio.create_task(one(i)) for i in range(4)]
            await asyncio.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    start = time.monotonic()
    outcomes = asyncio.run(load())
    print(f"\nkill under load: outcomes {outcomes} in {time.monotonic() - start:.1f} s")
    assert all(
        kind in ("ok", "error") or (kind == "status" and code in (429, 503))
        for kind, code in outcomes
    ), outcomes
    assert not any(kind in ("hung", "malformed") for kind, _ in outcomes)
    restored = _wait(
        lambda: _running_replica_pids(LIMITED_APP) not in ([], [pid]),
        180,
        "Serve to restore the replica",
    )
    print(f"replica restored after {restored:.1f} s")
    client = openai.OpenAI(base_url=openai_stack, api_key="x", max_retries=3)
    r = client.completions.create(
        model=LIMITED_MODEL, prompt="back", max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 3


def test_dead_engine_core_marks_replica_unhealthy(openai_stack, limited_app):
    """vLLM's AsyncLLM runs its engine core in a child process of the replica (with
    VLLM_ENABLE_V1_MULTIPROCESSING=0 too: that setting keeps the model worker inside
    the core process); kill it, and the replica's health check must fail."""
    import psutil

    (pid,) = _wait_one_pid(LIMITED_APP)
    cores = psutil.Process(pid).children(recursive=True)
    # Fail, never skip: without a child process this test would prove nothing.
    assert cores, f"replica {pid} has no child process: where is vLLM's engine core?"
    print(f"\nreplica {pid}: killing {[(p.pid, p.name()) for p in cores]}")
    for p in cores:
        p.kill()
    replaced = _wait(
        lambda: _running_replica_pids(LIMITED_APP) not in ([], [pid]),
        180,
        "Serve to replace the replica whose engine died",
    )
    print(f"engine core killed: replica replaced after {replaced:.1f} s")
    client = openai.OpenAI(base_url=openai_stack, api_key="x", max_retries=3)
    r = client.completions.create(
        model=LIMITED_MODEL, prompt="x", max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 2


def _wait_one_pid(app: str) -> list[int]:
    _wait(lambda: len(_running_replica_pids(app)) == 1, 180, "one running replica")
    return _running_replica_pids(app)


# --- load ------------------------------------------------------------------------


def test_two_hundred_concurrent_streams(openai_stack):
    import psutil

    def rss() -> dict[int, int]:
        return {
            r["pid"]: psutil.Process(r["pid"]).memory_info().rss
            for app in (TINY_APP, "openai")
            for r in _replicas(app)
        }

    async def load():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=250)) as http:

            async def one(i):
                body = {
                    "model": TINY_MODEL,
                    "prompt": f"client {i}",
                    "max_tokens": 16,
                    "ignore_eos": True,
                    "stream": True,
                }
                async with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                    if r.status_code != 200:
                        return r.status_code, 0, False
                    lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                    finishes = sum('"finish_reason":"length"' in line for line in lines)
                    return 200, finishes, lines[-1] == "data: [DONE]"

            return await asyncio.gather(*(one(i) for i in range(200)))

    before = rss()
    start = time.monotonic()
    results = asyncio.run(load())
    took = time.monotonic() - start
    ok = [r for r in results if r[0] == 200]
    print(
        f"\n200 concurrent streams: {len(ok)} completed in {took:.1f} s, "
        f"codes {sorted({r[0] for r in results})}"
    )
    assert all(code in (200, 429) for code, _, _ in results)
    assert len(ok) == 200  # the limit is 200: nothing is refused
    assert all(finishes == 1 and done for _, finishes, done in ok)
    time.sleep(2)
    after = rss()
    for pid, size in before.items():
        grown = (after.get(pid, size) - size) / size
        print(f"pid {pid}: rss {size / 2**20:.0f} -> {after.get(pid, size) / 2**20:.0f} MiB")
        assert grown < 0.25, f"process {pid} grew {grown:.0%}"


# --- metrics ---------------------------------------------------------------------


def test_metrics_route_and_its_key(openai_stack, secure_base, client):
    client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=2)
    open_url = openai_stack.replace("/v1/openai", "/metrics")  # auth off: open
    _wait(
        lambda: "ray_openai_serve_requests" in httpx.get(open_url, timeout=30).text,
        60,
        "the ingress's /metrics to show our metrics",
    )
    # Auth on: /metrics needs the key by default, /health never.
    secure = openai.OpenAI(base_url=secure_base, api_key=KEYS[0], max_retries=0)
    secure.completions.create(model=TINY_MODEL, prompt="m", max_tokens=2)
    secure_url = secure_base.replace("/v1/openai", "/metrics")
    assert httpx.get(secure_url, timeout=30).status_code == 401
    assert httpx.get(secure_base.replace("/v1/openai", "/health")).status_code == 200
    keyed = {"Authorization": f"Bearer {KEYS[0]}"}

    def key_lines() -> list[str]:
        r = httpx.get(secure_url, headers=keyed, timeout=30)
        assert r.status_code == 200 and "ray_openai_serve" in r.text
        assert not any(key in r.text for key in KEYS)  # never the key itself
        return [
            line
            for line in r.text.splitlines()
            if line.startswith(("ray_openai_serve_key_requests", "ray_openai_serve_key_tokens"))
            and f'key="{_key_id(KEYS[0])}"' in line
        ]

    _wait(
        lambda: (
            {line.split("{")[0].removesuffix("_total") for line in key_lines()}
            == {"ray_openai_serve_key_requests", "ray_openai_serve_key_tokens"}
        ),
        60,
        "the per-key counters to be exported",
    )


def test_metrics_are_exported(client, metrics_url):
    client.chat.completions.create(
        model=TINY_MODEL, messages=[{"role": "user", "content": "m"}], max_tokens=3, stream=True
    ).close()
    list(client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=3, stream=True))
    client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=3)
    wanted = [
        "ray_openai_serve_requests",
        "ray_openai_serve_time_to_first_token_seconds",
        "ray_openai_serve_inter_token_latency_seconds",
        "ray_openai_serve_request_latency_seconds",
        "ray_openai_serve_prompt_tokens",
        "ray_openai_serve_generation_tokens",
        "ray_openai_serve_running_requests",
        "ray_openai_serve_engine_unfinished_requests",
    ]

    def all_there() -> bool:
        text = httpx.get(metrics_url).text
        return all(
            any(
                line.startswith(w) and f'deploy_id="{TINY_APP}"' in line
                for line in text.splitlines()
            )
            for w in wanted
        )

    _wait(all_there, 60, "metrics to be exported")
    text = httpx.get(metrics_url).text
    assert any(
        line.startswith("ray_openai_serve_requests")
        and 'status="200"' in line
        and 'task="completion"' in line
        for line in text.splitlines()
    )
