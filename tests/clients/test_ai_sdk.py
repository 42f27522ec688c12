"""The Vercel AI SDK (tests/clients/node/, pinned by its package-lock.json) against the
same real server: `node --test ai_sdk.test.mjs` once for the module, with the session's
tiny LLM and MiniLM, then one pytest test per Node test, each passing when its Node test
did (its failure and Node's whole output shown when not)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EMBEDDINGS_MODEL, TINY_MODEL

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent / "node"
TEST_FILE = NODE_DIR / "ai_sdk.test.mjs"
# The Node tests' names, read from the file, so that each gets its pytest test.
NAMES = re.findall(r"^test\('([^']+)'", TEST_FILE.read_text(), flags=re.MULTILINE)
# Top-level TAP results ("ok 3 - name", "not ok 4 - name # SKIP"), then each one's YAML
# block (indented, up to its "  ...").
_RESULT = re.compile(r"^(ok|not ok) \d+ - (.*?)(?: # .*)?$")


@pytest.fixture(scope="module")
def node_results(openai_stack, minilm_app, tmp_path_factory) -> tuple[dict, str]:
    """Runs the Node tests once: ({name: (passed, its TAP block)}, Node's output)."""
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for tests/clients/node (scripts/install_test_tools.sh)"
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), (
        "tests/clients/node's packages are missing: run scripts/install_test_tools.sh "
        "(or `npm ci` in tests/clients/node)"
    )
    tap = tmp_path_factory.mktemp("ai-sdk") / "results.tap"
    env = {
        **os.environ,
        "OPENAI_SERVE_BASE_URL": openai_stack,
        "OPENAI_SERVE_CHAT_MODEL": TINY_MODEL,
        "OPENAI_SERVE_EMBEDDING_MODEL": EMBEDDINGS_MODEL,
    }
    # @ai-sdk/openai reads these by itself; the tests pass theirs explicitly.
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        env.pop(name, None)
    run = subprocess.run(
        [
            node,
            "--test",
            "--test-reporter=spec",
            "--test-reporter-destination=stdout",
            "--test-reporter=tap",
            f"--test-reporter-destination={tap}",
            str(TEST_FILE),
        ],
        env=env,
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = f"node --test: rc {run.returncode}\n{run.stdout}\n{run.stderr}"
    results: dict[str, tuple[bool, str]] = {}
    current = None
    for line in tap.read_text().splitlines() if tap.exists() else []:
        if m := _RESULT.match(line):
            current = m.group(2)
            results[current] = (m.group(1) == "ok", "")
        elif current and line.startswith("  "):
            passed, block = results[current]
            results[current] = (passed, block + line + "\n")
        else:
            current = None
    return results, output


def test_names_found():
    assert len(NAMES) >= 6, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_ai_sdk(node_results, name):
    results, output = node_results
    if name not in results:
        pytest.fail(f"no result for {name!r}\n{output}")
    passed, block = results[name]
    assert passed, f"{name}:\n{block}\n--- node's whole output ---\n{output}"
