"""Shared test setup: one real Ray instance and one set of Serve applications per
test session (engine starts are the slow part on 2 cores), on loopback only."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest

# free_port: a loopback port in a range no Ray part draws from (bench/servers.py says
# which); one the kernel hands out could go to a Ray part before our proxy binds it (a CI
# run lost `serve run` to exactly that).
from servers import HAPROXY_ENV, free_port, haproxy_paths  # bench/, on pytest's pythonpath

# Set before Ray or vLLM is imported anywhere in this process tree: workers and
# replicas inherit the environment of the driver.
_RUN_DIR = Path(tempfile.mkdtemp(prefix="openai-serve-tests-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CACHE_ROOT", str(_RUN_DIR / "vllm-cache"))
os.environ.setdefault("OPENAI_SERVE_CACHE", str(_RUN_DIR / "cache"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
# The serving mode scripts/serve.sh runs by default (Ray Serve's throughput mode, and
# a 1 s ingress drain instead of 30 s); RAY_SERVE_THROUGHPUT_OPTIMIZED=0 tests the
# fallback.
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
# OPENAI_SERVE_HAPROXY=1 runs the tests behind Ray Serve's HAProxy ingress, closed by
# scripts/haproxy_guard.py, as scripts/serve.sh runs it with the same switch (docs/performance.md
# "HAProxy in front"); its stats and Prometheus ports are this run's own, so a stack
# already running on this machine keeps 8404/9101.
if os.environ.get("OPENAI_SERVE_HAPROXY") == "1":
    # Its config and sockets in an owner-only folder of this run's (short: socket paths).
    _HAPROXY_PATHS = haproxy_paths(tempfile.mkdtemp(prefix="oss-hap-"))
    for _name, _value in {**HAPROXY_ENV, **_HAPROXY_PATHS}.items():
        os.environ.setdefault(_name, _value)
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
BEHIND_HAPROXY = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
# Ray's token authentication stays on in tests too (never off, not even on loopback):
# a token of this run's own, owner-only, handed to every Ray process through the
# environment they inherit.
_TOKEN = _RUN_DIR / "ray_auth_token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN)

# A one-process engine starts in ~12 s instead of ~30 s (measured here); fine for
# tests, production keeps vLLM's default multiprocess engine.
TEST_ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OPENAI_SERVE_GLOO_ONE_DEVICE": "1",  # as serve_config.yaml's CPU engines
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CACHE_ROOT": os.environ["VLLM_CACHE_ROOT"],
    "OPENAI_SERVE_CACHE": os.environ["OPENAI_SERVE_CACHE"],
    "HF_HUB_OFFLINE": "1",
}
# The session ingress's state store (stored responses): a SQLite file of this run's.
STATE_DIR = _RUN_DIR / "state"
TINY_MODEL = "tiny/llama"
TINY_APP = "tiny-llama-v1"
# The reference's snippets name this model; the tiny app answers to it as an alias so
# the snippets run with only the base URL changed.
SNIPPET_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
EMBEDDINGS_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDINGS_APP = "minilm"
TINY_ENGINE_KWARGS = {
    "max_model_len": 2048,
    "enforce_eager": True,
    "dtype": "float32",
    "distributed_executor_backend": "uni",
}


def tiny_llm_args(model: str = TINY_MODEL, version: str = "1", seed: int = 0, **overrides) -> dict:
    """serve_config-style args for an LLM application on the tiny fixture model."""
    args = {
        "model": model,
        "version": version,
        "model_source": f"fixture:tiny-llama?seed={seed}",
        "engine": {"engine_kwargs": dict(TINY_ENGINE_KWARGS)},
        "deployment": {
            "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": TEST_ENGINE_ENV}}
        },
    }
    args.update(overrides)
    return args


@pytest.fixture(scope="session")
def ray_serve():
    """A real Ray instance with Serve's HTTP proxy on a free loopback port."""
    import ray
    from ray import serve

    metrics_port = free_port()
    os.environ["OPENAI_SERVE_TEST_METRICS_PORT"] = str(metrics_port)
    # "local": a new instance, even where a stale /tmp/ray/ray_current_cluster names one.
    ray.init(
        address="local",
        num_cpus=8,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        _temp_dir=str(_RUN_DIR / "ray"),
        configure_logging=False,
        _metrics_export_port=metrics_port,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def openai_stack(ray_serve):
    """The ingress plus one tiny LLM application, deployed once per session.

    Returns the base URL of the OpenAI API."""
    from ray import serve
    from ray.serve.api import RunTarget

    from deployments.llm.builder import build_app as build_llm
    from ingress.builder import build_app as build_ingress

    # Both at once: the ingress replica starts while the engine does.
    # hermes: exercises the tool-call parser path of tool_choice "auto" (the random
    # model never writes a <tool_call>, so it answers in text).
    llm_args = tiny_llm_args(default=True, aliases=[SNIPPET_MODEL], tool_call_parser="hermes")
    ingress_args = {
        "catalog_refresh_s": 0.5,
        "auth": {"enabled": False},
        "state": {"data_dir": str(STATE_DIR)},  # this run's own SQLite store
        # A killed batch supervisor's batch moves on within seconds (test_batches.py).
        "batches": {"lease_s": 5, "checkpoint_s": 0.5},
    }
    serve.run_many(
        [
            RunTarget(target=build_llm(llm_args), name=TINY_APP, route_prefix=None),
            RunTarget(target=build_ingress(ingress_args), name="openai", route_prefix="/"),
        ]
    )
    return f"{ray_serve}/v1/openai"


@pytest.fixture(scope="session")
def client(openai_stack):
    import openai

    return openai.OpenAI(base_url=openai_stack, api_key="test", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def async_client(openai_stack):
    import openai

    return openai.AsyncOpenAI(base_url=openai_stack, api_key="test", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The fixture model's tokenizer, loaded here to check the server's token counts."""
    from transformers import AutoTokenizer

    from deployments.models.sources import resolve_model_source

    return AutoTokenizer.from_pretrained(str(resolve_model_source("fixture:tiny-llama?seed=0")))


def delete_app(name: str) -> None:
    """A module's teardown of its application: Serve deletes it in the background. Its
    replicas' graceful stop (seconds each: draining, the engine's shutdown) then overlaps
    the next module's work instead of adding to the suite's time; no later module
    deploys an application of the same name."""
    from ray import serve

    serve.delete(name, _blocking=False)


def driver_handle(app: str):
    """A handle for this (synchronous) test process: its router in Serve's own thread,
    also under RAY_SERVE_THROUGHPUT_OPTIMIZED=1, whose default router needs the caller's
    event loop (replicas keep that mode; only the test driver's handles differ)."""
    from ray import serve

    handle = serve.get_app_handle(app)
    if not handle.is_initialized:
        handle._init(_run_router_in_separate_loop=True)
    return handle


@pytest.fixture(scope="session")
def tiny_app_handle(openai_stack):
    return driver_handle(TINY_APP)


@pytest.fixture(scope="session")
def metrics_url(ray_serve) -> str:
    """Prometheus text endpoint of this node's Ray metrics agent."""
    return f"http://127.0.0.1:{os.environ['OPENAI_SERVE_TEST_METRICS_PORT']}/metrics"


# pytest-timeout's bound for each test of tests/e2e and tests/clients, which share the
# session's applications (pyproject.toml's 60 s is for unit tests),
# counted from its setup to its teardown: the test that first asks for a session or module
# fixture pays that fixture's start inside its own bound (the tiny engine behind
# openai_stack, MiniLM, FLUX, `tiny/limited`, a module's own applications: about a minute
# each on the 2-core CI machine, 3-5 on a loaded one), and the session's last test pays
# Serve's and Ray's shutdown. The longest own bound of a test is test_node_sdk's 600 s for
# `node --test`; 900 s leaves its fixtures 5 minutes. Fixtures stay bounded this way
# (rather than with timeout_func_only), so an engine that never comes up fails its test.
# A module or test with its own `pytest.mark.timeout` keeps it.
E2E_TIMEOUT_S = 900
_E2E_DIRS = (Path(__file__).parent / "e2e", Path(__file__).parent / "clients")
# The shared applications that idle once their modules are done: MiniLM (here) and FLUX
# (tests/e2e/conftest.py).
_SHARED = {"minilm_app", "flux_app"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gives the e2e and client tests their bound (E2E_TIMEOUT_S) and runs them after
    every unit test (those expect no Ray in this process: tests/clients sorts before
    tests/deployments), then moves every module that uses a shared app to the end, each
    module kept whole (split, its module-scoped fixtures would be set up twice) and in
    its own order."""
    e2e = set()
    for item in items:
        parents = Path(str(item.path)).parents
        if any(d in parents for d in _E2E_DIRS):
            e2e.add(item.module)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
    users = {item.module for item in items if _SHARED & set(getattr(item, "fixturenames", ()))}
    # Stable: the order is kept otherwise.
    items.sort(key=lambda item: (item.module in e2e, item.module in users))


@pytest.fixture(scope="session")
def minilm_app(openai_stack):
    """The MiniLM application (tests/e2e and tests/clients share it), deployed on first
    use and left to the session's Serve shutdown; returns its handle (for the engine's
    stats)."""
    from ray import serve

    from deployments.embeddings.builder import build_app

    # The tiny LLM's engine binds core 0 ("auto"); this one takes core 1.
    env = dict(TEST_ENGINE_ENV, VLLM_CPU_OMP_THREADS_BIND="1")
    args = {
        "model": EMBEDDINGS_MODEL,
        "model_source": "package:all-minilm-l6-v2",
        "engine": {"engine_kwargs": {"dtype": "float32", "enforce_eager": True}},
        "deployment": {"ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}},
    }
    serve.run(build_app(args), name=EMBEDDINGS_APP, route_prefix=None)
    return driver_handle(EMBEDDINGS_APP)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server of this session's own (tests/postgres.py): its
    `postgresql+asyncpg://` URL; stopped at the session's end."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url
