"""The e2e modules' shared applications, each deployed once for the whole session on
first use and left to the session's Serve shutdown (an engine start costs about a
minute of the 2-core CI machine's `.ci/run`):
- MiniLM embeddings and the tiny FLUX pipeline (test_embeddings, test_images,
  test_node_sdk, test_playground). The modules that use them run last, so that the two
  idle replicas (a few % of a core each) stay up no longer than needed.
- `tiny/limited`, a tiny LLM with a small concurrency limit and 1 s health checks
  (test_disconnect_storm keeps its limit full; test_production takes its 429, kills
  its replica, then its engine core): one start instead of three.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import TEST_ENGINE_ENV, driver_handle, tiny_llm_args

EMBEDDINGS_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDINGS_APP = "minilm"
IMAGE_MODEL = "openai-serve/tiny-flux-random"
IMAGE_APP = "tiny-flux"
_SHARED = {"minilm_app", "flux_app"}
LIMITED_APP, LIMITED_MODEL, LIMIT = "tiny-limited", "tiny/limited", 6


# pytest-timeout's bound for each test here (pyproject.toml's 60 s is for unit tests),
# counted from its setup to its teardown: the test that first asks for a session or module
# fixture pays that fixture's start inside its own bound (the tiny engine behind
# openai_stack, MiniLM, FLUX, `tiny/limited`, a module's own applications: about a minute
# each on the 2-core CI machine, 3-5 on a loaded one), and the session's last test pays
# Serve's and Ray's shutdown. The longest own bound of a test is test_node_sdk's 600 s for
# `node --test`; 900 s leaves its fixtures 5 minutes. Fixtures stay bounded this way
# (rather than with timeout_func_only), so an engine that never comes up fails its test.
# A module or test with its own `pytest.mark.timeout` keeps it.
E2E_TIMEOUT_S = 900
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gives the e2e tests their bound (E2E_TIMEOUT_S), then moves every module that uses
    a shared app to the end, each module kept whole (split, its module-scoped fixtures
    would be set up twice) and in its own order."""
    for item in items:
        if _HERE in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
    users = {item.module for item in items if _SHARED & set(getattr(item, "fixturenames", ()))}
    items.sort(key=lambda item: item.module in users)  # stable: order kept otherwise


@pytest.fixture(scope="session")
def minilm_app(openai_stack):
    """The MiniLM application; returns its handle (for the engine's stats)."""
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
def flux_app(openai_stack):
    """The tiny FLUX application, the default image model (requests without `model`
    reach it); returns its handle."""
    from ray import serve

    from deployments.images.builder import build_app

    env = {"HF_HUB_OFFLINE": "1", "OPENAI_SERVE_CACHE": os.environ["OPENAI_SERVE_CACHE"]}
    serve.run(
        build_app(
            {
                "model": IMAGE_MODEL,
                "default": True,
                "owned_by": "openai-serve (random weights; images are noise)",
                "model_source": "fixture:tiny-flux",
                "engine": {"call_kwargs": {"max_sequence_length": 64}},
                # A wider window than the default, so concurrent test requests that cross a
                # busy 2-core machine still meet in one batch.
                "batching": {"max_batch_images": 8, "batch_wait_timeout_s": 0.2},
                "deployment": {
                    "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}
                },
            }
        ),
        name=IMAGE_APP,
        route_prefix=None,
    )
    return driver_handle(IMAGE_APP)


@pytest.fixture(scope="session")
def limited_app(openai_stack):
    """The `tiny/limited` application (LIMIT requests at once, health checks every
    second); returns its handle (for the engine's stats)."""
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(model=LIMITED_MODEL, max_concurrent_requests=LIMIT)
    args["deployment"].update({"health_check_period_s": 1, "health_check_timeout_s": 10})
    actor = args["deployment"]["ray_actor_options"]
    actor["runtime_env"]["env_vars"] = {
        **actor["runtime_env"]["env_vars"],  # a copy: TEST_ENGINE_ENV is shared
        "VLLM_CPU_OMP_THREADS_BIND": "1",  # the session engine has core 0
    }
    serve.run(build_app(args), name=LIMITED_APP, route_prefix=None)
    return driver_handle(LIMITED_APP)
