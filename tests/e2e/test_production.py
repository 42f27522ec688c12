"""Production safety through real Serve + vLLM + HTTP: API keys, per-model limits,
client disconnects at scale, a killed replica, a dead engine, load, and metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import TINY_APP, TINY_MODEL, tiny_llm_args

pytestmark = pytest.mark.e2e

KEYS = ("sk-test-one", "sk-test-two")
LIMITED_APP, LIMITED_MODEL, LIMIT = "tiny-limited", "tiny/limited", 6


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
    """A second ingress with auth on, under /secure, keys from its environment."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(build_app({"auth": {"protect_metrics": True},
                         "deployment": {"name": "SecureIngress", "ray_actor_options": {
                             "runtime_env": {"env_vars": {
                                 "OPENAI_SERVE_API_KEYS": ",".join(KEYS)}}}}}),
              name="openai-secure", route_prefix="/secure")
    yield openai_stack.replace("/v1/openai", "/secure/v1/openai")
    serve.delete("openai-secure")


@pytest.fixture(scope="module")
def limited_app(openai_stack):
    """A tiny-model app with a low concurrency limit and fast health checks."""
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(model=LIMITED_MODEL, max_concurrent_requests=LIMIT)
    args["deployment"].update({"health_check_period_s": 1, "health_check_timeout_s": 10})
    args["deployment"]["ray_actor_options"]["runtime_env"]["env_vars"] = {
        **args["deployment"]["ray_actor_options"]["runtime_env"]["env_vars"],
        "VLLM_CPU_OMP_THREADS_BIND": "1"}  # the session engine has core 0
    serve.run(build_app(args), name=LIMITED_APP, route_prefix=None)
    yield
    serve.delete(LIMITED_APP)


# --- API keys --------------------------------------------------------------------


def test_api_keys(secure_base):
    health = secure_base.replace("/v1/openai", "/health")
    assert httpx.get(health).status_code == 200  # health needs no key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sk-test-one"},
                    {"Authorization": f"Bearer {KEYS[0]}x"}):
        r = httpx.get(f"{secure_base}/models", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
    for key in KEYS:
        r = httpx.get(f"{secure_base}/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["object"] == "list"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secure_base, api_key="nope", max_retries=0).models.list()
    good = openai.OpenAI(base_url=secure_base, api_key=KEYS[1], max_retries=0)
    r = good.completions.create(model=TINY_MODEL, prompt="hi", max_tokens=2)
    assert r.usage.completion_tokens == 2


# --- limits ----------------------------------------------------------------------


def test_concurrency_limit_is_a_shaped_429(openai_stack, limited_app):
    async def run():
        async with httpx.AsyncClient(timeout=120) as http:
            async def one():
                return await http.post(f"{openai_stack}/completions", json={
                    "model": LIMITED_MODEL, "prompt": "x", "max_tokens": 300, "ignore_eos": True})
            return await asyncio.gather(*(one() for _ in range(LIMIT + 6)))

    responses = asyncio.run(run())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= LIMIT and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"


@pytest.fixture(scope="module")
def queued_app(openai_stack):
    """One replica that takes one request at a time and queues one more; the engine is
    a slow stand-in (tests/fakes.py): what is tested is Serve's queue and our shaping."""
    from ray import serve

    from deployments.contract import MODEL_CARD_KEY
    from deployments.llm.config import LLMAppConfig
    from deployments.llm.server import LLMServer
    from tests.fakes import SlowEngine

    config = LLMAppConfig(model="test/queued", model_source="/tmp")
    app = serve.deployment(LLMServer).options(
        name="queued", max_ongoing_requests=1, max_queued_requests=1,
        user_config={MODEL_CARD_KEY: config.card().model_dump(mode="json")},
        ray_actor_options={"num_cpus": 0},
    ).bind(config.model_dump(mode="json"), engine_cls=SlowEngine)
    serve.run(app, name="queued", route_prefix=None)
    yield
    serve.delete("queued")


def test_full_serve_queue_is_a_shaped_429(openai_stack, queued_app):
    async def run():
        async with httpx.AsyncClient(timeout=60) as http:
            async def one():
                return await http.post(f"{openai_stack}/completions", json={
                    "model": "test/queued", "prompt": "x", "max_tokens": 5})
            return await asyncio.gather(*(one() for _ in range(6)))

    responses = asyncio.run(run())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1


def test_oversized_headers_are_refused_not_hung(openai_stack):
    r = httpx.get(f"{openai_stack}/models", headers={"x-big": "a" * 200_000}, timeout=30)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "request_header_fields_too_large"
    many = {f"x-h{i}": "v" for i in range(150)}
    assert httpx.get(f"{openai_stack}/models", headers=many, timeout=30).status_code == 431
    assert httpx.get(f"{openai_stack}/models", timeout=30).status_code == 200


def test_caps_are_400(openai_stack):
    r = httpx.post(f"{openai_stack}/completions", json={"model": TINY_MODEL, "prompt": "x", "n": 17})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


# --- faults ----------------------------------------------------------------------


def test_hundred_disconnects_leave_nothing_running(openai_stack, tiny_app_handle, metrics_url):
    def unfinished() -> int:
        return tiny_app_handle.stats.remote().result()["unfinished_requests"]

    async def open_and_leave():
        async with httpx.AsyncClient(timeout=120) as http:
            async def one(i):
                body = {"model": TINY_MODEL, "prompt": f"story {i}", "max_tokens": 1500,
                        "ignore_eos": True, "stream": True}
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
        lines = [l for l in text.splitlines() if l.startswith("ray_openai_serve_engine_unfinished_requests")
                 and f'deploy_id="{TINY_APP}"' in l]
        return bool(lines) and all(float(l.rsplit(" ", 1)[1]) == 0 for l in lines)
    _wait(gauge_zero, 30, "the exported gauge to read 0")
    assert time.monotonic() - left < 60


def test_killed_replica_under_load(openai_stack, limited_app):
    """SIGKILL the model replica while streams run: every client ends within a bound
    (completed, or a retryable error), Serve restores the replica, traffic recovers."""
    (pid,) = _running_replica_pids(LIMITED_APP)

    async def load():
        async with httpx.AsyncClient(timeout=90) as http:
            async def one(i):
                body = {"model": LIMITED_MODEL, "prompt": f"s{i}", "max_tokens": 400,
                        "ignore_eos": True, "stream": True}
                try:
                    async with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                        if r.status_code != 200:
                            return ("status", r.status_code)
                        lines = [l async for l in r.aiter_lines() if l.startswith("data: ")]
                        if lines[-1] != "data: [DONE]":
                            return ("malformed", lines[-1])
                        return ("error", None) if any('"error"' in l for l in lines) else ("ok", None)
                except httpx.TimeoutException:
                    return ("hung", None)

            tasks = [asyncio.create_task(one(i)) for i in range(4)]
            await asyncio.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    start = time.monotonic()
    outcomes = asyncio.run(load())
    print(f"\nkill under load: outcomes {outcomes} in {time.monotonic() - start:.1f} s")
    assert all(kind in ("ok", "error") or (kind == "status" and code in (429, 503))
               for kind, code in outcomes), outcomes
    assert not any(kind in ("hung", "malformed") for kind, _ in outcomes)
    restored = _wait(lambda: _running_replica_pids(LIMITED_APP) not in ([], [pid]), 180,
                     "Serve to restore the replica")
    print(f"replica restored after {restored:.1f} s")
    client = openai.OpenAI(base_url=openai_stack, api_key="x", max_retries=3)
    r = client.completions.create(model=LIMITED_MODEL, prompt="back", max_tokens=3)
    assert r.usage.completion_tokens == 3


def test_dead_engine_core_marks_replica_unhealthy(openai_stack, limited_app):
    import psutil

    (pid,) = _wait_one_pid(LIMITED_APP)
    cores = [p for p in psutil.Process(pid).children(recursive=True)]
    if not cores:
        pytest.skip("engine runs inside the replica process: no engine core to kill")
    for p in cores:
        p.kill()
    replaced = _wait(lambda: _running_replica_pids(LIMITED_APP) not in ([], [pid]), 180,
                     "Serve to replace the replica whose engine died")
    print(f"\nengine core killed: replica replaced after {replaced:.1f} s")
    client = openai.OpenAI(base_url=openai_stack, api_key="x", max_retries=3)
    assert client.completions.create(model=LIMITED_MODEL, prompt="x", max_tokens=2).usage


def _wait_one_pid(app: str) -> list[int]:
    _wait(lambda: len(_running_replica_pids(app)) == 1, 180, "one running replica")
    return _running_replica_pids(app)


# --- load ------------------------------------------------------------------------


def test_two_hundred_concurrent_streams(openai_stack):
    import psutil

    def rss() -> dict[int, int]:
        return {r["pid"]: psutil.Process(r["pid"]).memory_info().rss
                for app in (TINY_APP, "openai") for r in _replicas(app)}

    async def load():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=250)) as http:
            async def one(i):
                body = {"model": TINY_MODEL, "prompt": f"client {i}", "max_tokens": 16,
                        "ignore_eos": True, "stream": True}
                async with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                    if r.status_code != 200:
                        return r.status_code, 0, False
                    lines = [l async for l in r.aiter_lines() if l.startswith("data: ")]
                    finishes = sum('"finish_reason":"length"' in l for l in lines)
                    return 200, finishes, lines[-1] == "data: [DONE]"
            return await asyncio.gather(*(one(i) for i in range(200)))

    before = rss()
    start = time.monotonic()
    results = asyncio.run(load())
    took = time.monotonic() - start
    ok = [r for r in results if r[0] == 200]
    print(f"\n200 concurrent streams: {len(ok)} completed in {took:.1f} s, "
          f"codes {sorted({r[0] for r in results})}")
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
    open_url = openai_stack.replace("/v1/openai", "/metrics")
    _wait(lambda: "ray_openai_serve_requests" in httpx.get(open_url, timeout=30).text, 60,
          "the ingress's /metrics to show our metrics")
    secure_url = secure_base.replace("/v1/openai", "/metrics")
    assert httpx.get(secure_url, timeout=30).status_code == 401
    r = httpx.get(secure_url, headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=30)
    assert r.status_code == 200 and "ray_openai_serve" in r.text


def test_metrics_are_exported(client, metrics_url):
    client.chat.completions.create(model=TINY_MODEL, messages=[{"role": "user", "content": "m"}],
                                   max_tokens=3, stream=True).close()
    list(client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=3, stream=True))
    client.completions.create(model=TINY_MODEL, prompt="m", max_tokens=3)
    wanted = ["ray_openai_serve_requests", "ray_openai_serve_time_to_first_token_seconds",
              "ray_openai_serve_inter_token_latency_seconds",
              "ray_openai_serve_request_latency_seconds", "ray_openai_serve_prompt_tokens",
              "ray_openai_serve_generation_tokens", "ray_openai_serve_running_requests",
              "ray_openai_serve_engine_unfinished_requests"]

    def all_there() -> bool:
        text = httpx.get(metrics_url).text
        return all(any(l.startswith(w) and f'deploy_id="{TINY_APP}"' in l
                       for l in text.splitlines()) for w in wanted)
    _wait(all_there, 60, "metrics to be exported")
    text = httpx.get(metrics_url).text
    assert any(l.startswith("ray_openai_serve_requests") and 'status="200"' in l
               and 'endpoint="completions"' in l for l in text.splitlines())
