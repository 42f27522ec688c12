"""The e2e modules' shared applications, each deployed once for the whole session on
first use and left to the session's Serve shutdown (an engine start costs about a
minute of the 2-core CI machine's `.ci/run`):
- The tiny FLUX pipeline (test_images, test_node_sdk, test_playground); MiniLM
  embeddings (`minilm_app`) are tests/conftest.py's, shared with tests/clients. The
  modules that use either run last (tests/conftest.py's pytest_collection_modifyitems),
  so that the two idle replicas (a few % of a core each) stay up no longer than needed.
- `tiny/limited`, a tiny LLM with a small concurrency limit and 1 s health checks
  (test_disconnect_storm keeps its limit full; test_production takes its 429, kills
  its replica, then its engine core): one start instead of three.
"""

from __future__ import annotations

import os

import pytest

# MiniLM's names re-exported: the e2e modules import them from here.
from tests.conftest import EMBEDDINGS_APP as EMBEDDINGS_APP
from tests.conftest import EMBEDDINGS_MODEL as EMBEDDINGS_MODEL
from tests.conftest import driver_handle, tiny_llm_args

IMAGE_MODEL = "openai-serve/tiny-flux-random"
IMAGE_APP = "tiny-flux"
LIMITED_APP, LIMITED_MODEL, LIMIT = "tiny-limited", "tiny/limited", 6


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
