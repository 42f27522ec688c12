"""The official `openai` Node.js SDK (tests/node/, pinned by its package-lock.json)
against the same real server as the Python SDK tests: `node --test tests/node/`, with
the models of this module deployed next to the session's tiny LLM."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_ENGINE_ENV, TINY_MODEL

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_APP = "node-minilm"
IMAGE_MODEL = "openai-serve/tiny-flux-random"
IMAGE_APP = "node-tiny-flux"


@pytest.fixture(scope="module")
def other_models(openai_stack):
    """MiniLM embeddings and the tiny FLUX pipeline, deployed once for this module
    (as in test_embeddings.py and test_images.py)."""
    from ray import serve
    from ray.serve.api import RunTarget

    from deployments.embeddings.builder import build_app as build_embeddings
    from deployments.images.builder import build_app as build_images

    # The tiny LLM's engine binds core 0 ("auto"); this one takes core 1.
    env = dict(TEST_ENGINE_ENV, VLLM_CPU_OMP_THREADS_BIND="1")
    embeddings = {
        "model": EMBEDDING_MODEL,
        "model_source": "package:all-minilm-l6-v2",
        "engine": {"engine_kwargs": {"dtype": "float32", "enforce_eager": True}},
        "deployment": {"ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}},
    }
    image_env = {"HF_HUB_OFFLINE": "1", "OPENAI_SERVE_CACHE": os.environ["OPENAI_SERVE_CACHE"]}
    images = {
        "model": IMAGE_MODEL,
        "model_source": "fixture:tiny-flux",
        "engine": {"call_kwargs": {"max_sequence_length": 64}},
        "deployment": {
            "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": image_env}}
        },
    }
    # Both at once: their replicas start side by side instead of one after the other.
    serve.run_many(
        [
            RunTarget(target=build_embeddings(embeddings), name=EMBEDDING_APP, route_prefix=None),
            RunTarget(target=build_images(images), name=IMAGE_APP, route_prefix=None),
        ]
    )
    yield
    serve.delete(EMBEDDING_APP)
    serve.delete(IMAGE_APP)


def _unfinished(handle) -> int:
    """The engine's own count of requests it still holds (vLLM's output processor)."""
    return handle.stats.remote().result()["unfinished_requests"]


def test_node_sdk(openai_stack, other_models, tiny_app_handle):
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for tests/node (scripts/install_test_tools.sh)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), (
        "tests/node's packages are missing: run scripts/install_test_tools.sh "
        "(or `npm ci` in tests/node)"
    )
    assert _unfinished(tiny_app_handle) == 0
    env = {
        **os.environ,
        "OPENAI_SERVE_BASE_URL": openai_stack,
        "OPENAI_SERVE_CHAT_MODEL": TINY_MODEL,
        "OPENAI_SERVE_EMBEDDING_MODEL": EMBEDDING_MODEL,
        "OPENAI_SERVE_IMAGE_MODEL": IMAGE_MODEL,
    }
    # The SDK reads these by itself; the tests pass theirs explicitly.
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_LOG"):
        env.pop(name, None)
    run = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(NODE_DIR)],
        env=env,
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(run.stdout, run.stderr, sep="\n")
    assert run.returncode == 0, f"node --test failed (rc {run.returncode}); output above"

    # The aborted stream (the last Node test) must not stay in the engine.
    left = time.monotonic()
    while _unfinished(tiny_app_handle) and time.monotonic() - left < 10:
        time.sleep(0.05)
    assert _unfinished(tiny_app_handle) == 0, "the engine kept generating for an aborted stream"
