"""The playground page in a real browser against real Serve: Debian's chromium driven
by playwright-core (tests/browser/playground.test.mjs, one node test per scenario),
with what only this side can see checked in between: the engine's own count of
unfinished requests after Stop, and the page's snippets run as they are.

Needs scripts/install_test_tools.sh (chromium, node, `npm ci` in tests/browser).
PLAYGROUND_SCREENSHOTS=docs refreshes the README's screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, delete_app
from tests.e2e.conftest import EMBEDDINGS_MODEL, IMAGE_MODEL
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BROWSER_TESTS = ROOT / "tests" / "browser"
SCRIPT = BROWSER_TESTS / "playground.test.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SECURE_PREFIX = "/pg-secure"
KEY = "sk-playground-test"


@pytest.fixture(scope="module")
def node() -> str:
    """node, with chromium and playwright-core beside it, or a failure that says how."""
    found = shutil.which("node")
    missing = [
        what
        for what, ok in (
            ("node", found),
            (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
            (
                "tests/browser/node_modules",
                (BROWSER_TESTS / "node_modules/playwright-core").is_dir(),
            ),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/install_test_tools.sh")
    assert found
    return found


@pytest.fixture(scope="module")
def page(openai_stack) -> str:
    """The playground's URL on the session's ingress (auth off)."""
    return openai_stack.removesuffix("v1/openai")


@pytest.fixture(scope="module")
def minilm(minilm_app) -> str:
    """MiniLM embeddings, the session's (tests/e2e/conftest.py): its model name."""
    return EMBEDDINGS_MODEL


@pytest.fixture(scope="module")
def image_model(flux_app) -> str:
    """The tiny random FLUX pipeline, the session's (tests/e2e/conftest.py): its name."""
    return IMAGE_MODEL


@pytest.fixture(scope="module")
def secure_page(openai_stack):
    """A second ingress with auth on, under its own route prefix: its page's URL."""
    from ray import serve

    from ingress.builder import build_app

    env = {"OPENAI_SERVE_API_KEYS": KEY}
    args = {
        "deployment": {
            "name": "PlaygroundSecureIngress",
            "ray_actor_options": {"runtime_env": {"env_vars": env}},
        }
    }
    serve.run(build_app(args), name="openai-playground-secure", route_prefix=SECURE_PREFIX)
    # Without the trailing slash: the ingress redirects to it (the page's URLs are relative).
    yield openai_stack.replace("/v1/openai", SECURE_PREFIX)
    delete_app("openai-playground-secure")


def _command(node: str, scenario: str) -> list[str]:
    return [node, "--test", f"--test-name-pattern=^{scenario}$", str(SCRIPT)]


def _env(page: str, out: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "PLAYGROUND_URL": page,
        "PLAYGROUND_OUT": str(out),
        "CHAT_MODEL": TINY_MODEL,
        "CHROMIUM": CHROMIUM,
        **more,
    }


def _check(result: subprocess.CompletedProcess[str] | tuple[int, str], scenario: str) -> None:
    code, output = (
        (result.returncode, result.stdout)
        if isinstance(result, subprocess.CompletedProcess)
        else result
    )
    assert code == 0, f"browser test {scenario!r} failed:\n{output[-6000:]}"
    # node's runner exits 0 when the pattern matches nothing: a renamed test must not pass.
    assert "# pass 1" in output, f"{scenario}: no test ran\n{output[-3000:]}"


def _run(node: str, scenario: str, page: str, out: Path, **env: str) -> None:
    result = subprocess.run(
        _command(node, scenario),
        env=_env(page, out, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _check(
        subprocess.CompletedProcess(result.args, result.returncode, result.stdout + result.stderr),
        scenario,
    )


def _unfinished(handle) -> int:
    """The engine's own count of requests it still holds (vLLM's output processor)."""
    return handle.stats.remote().result()["unfinished_requests"]


def test_models_are_listed_by_task_and_refreshed(node, page, tmp_path):
    _run(node, "models", page, tmp_path)


def test_chat_streams_and_its_snippets_run(node, page, tmp_path):
    _run(node, "chat", page, tmp_path)
    snippets = json.loads((tmp_path / "chat-snippets.json").read_text())
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

    curl = subprocess.run(
        ["bash", "-c", snippets["curl"]], env=env, capture_output=True, text=True, timeout=120
    )
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout.rstrip().endswith("data: [DONE]"), curl.stdout[-500:]
    assert '"usage"' in curl.stdout

    python = subprocess.run(
        [sys.executable, "-c", snippets["python"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert python.returncode == 0, python.stderr[-3000:]
    assert "completion_tokens=8" in python.stdout, python.stdout  # max_tokens 8, ignore_eos

    script = tmp_path / "snippet.mjs"
    script.write_text(snippets["node"])
    check = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_responses_mode_streams_and_its_snippets_run(node, page, tmp_path):
    """The chat tab in its Responses mode (POST /v1/openai/responses): streamed text and
    usage, the API's errors; then its snippets (the last request: 8 output tokens at
    most, streamed) run as they are."""
    _run(node, "responses", page, tmp_path)
    snippets = json.loads((tmp_path / "responses-snippets.json").read_text())
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

    curl = subprocess.run(
        ["bash", "-c", snippets["curl"]], env=env, capture_output=True, text=True, timeout=120
    )
    assert curl.returncode == 0, curl.stderr
    assert "event: response.output_text.delta" in curl.stdout, curl.stdout[-1500:]
    assert re.search(r"event: response\.(completed|incomplete)\n", curl.stdout), curl.stdout[-1500:]
    assert "[DONE]" not in curl.stdout

    python = subprocess.run(
        [sys.executable, "-c", snippets["python"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert python.returncode == 0, python.stderr[-3000:]
    usage = re.search(r"input_tokens=\d+.*output_tokens=(\d+)", python.stdout)
    assert usage and 1 <= int(usage[1]) <= 8, python.stdout

    script = tmp_path / "snippet.mjs"
    script.write_text(snippets["node"])
    check = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_stop_aborts_the_request_in_the_engine(node, page, tmp_path, tiny_app_handle):
    """Stop aborts the fetch; the ingress sees the client go and the engine drops the
    request (1900 tokens with ignore_eos would take several seconds more)."""
    assert _unfinished(tiny_app_handle) == 0
    proc = subprocess.Popen(
        _command(node, "stop"),
        env=_env(page, tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = 0

    def ended() -> bool:
        nonlocal seen
        seen = max(seen, _unfinished(tiny_app_handle))
        return proc.poll() is not None

    try:  # as long as the other scenarios may take (_run's bound)
        wait_until(ended, "the browser's Stop scenario to end", timeout_s=300, every_s=0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    output, _ = proc.communicate()
    _check((proc.returncode, output), "stop")
    assert seen == 1, "the chat request never reached the engine"
    stopped_at = json.loads((tmp_path / "stop.json").read_text())["stoppedAt"] / 1000
    while _unfinished(tiny_app_handle) and time.time() - stopped_at < 10:
        time.sleep(0.05)
    assert _unfinished(tiny_app_handle) == 0, "the engine kept generating after Stop"
    elapsed = time.time() - stopped_at
    assert elapsed < 2.0, f"the engine let go {elapsed:.2f} s after Stop"


def test_completions_stream_with_stop_sequences(node, page, tmp_path):
    _run(node, "completions", page, tmp_path)


def test_embeddings_draw_a_similarity_matrix(node, page, tmp_path, minilm):
    _run(node, "embeddings", page, tmp_path, EMBEDDINGS_MODEL=minilm)


def test_images_render_and_download(node, page, tmp_path, image_model):
    _run(node, "images", page, tmp_path, IMAGE_MODEL=image_model)


def test_bad_requests_show_the_api_message(node, page, tmp_path):
    _run(node, "bad request", page, tmp_path)


def test_auth_on_without_a_key_shows_the_401(node, page, tmp_path, secure_page):
    _run(node, "auth", page, tmp_path, PLAYGROUND_SECURE_URL=secure_page, PLAYGROUND_API_KEY=KEY)
