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

from tests.conftest import TINY_MODEL
from tests.e2e.conftest import EMBEDDINGS_MODEL as EMBEDDING_MODEL
from tests.e2e.conftest import IMAGE_MODEL

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def other_models(minilm_app, flux_app):
    """MiniLM embeddings and the tiny FLUX pipeline: the session's (tests/e2e/conftest.py)."""


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
