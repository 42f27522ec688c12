"""A client that leaves mid-stream must not leave its request running in the engine."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.e2e


def _unfinished(handle) -> int:
    """The engine's own count of requests it still holds (vLLM's output processor)."""
    return handle.stats.remote().result()["unfinished_requests"]


def test_disconnect_aborts_engine_request(openai_stack, tiny_app_handle):
    assert _unfinished(tiny_app_handle) == 0
    body = {
        "model": TINY_MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    # 2000 tokens take over 5 s on this fixture model; we leave after the first chunk.
    with httpx.Client(timeout=60) as http:
        r = http.send(
            http.build_request("POST", f"{openai_stack}/completions", json=body), stream=True
        )
        assert r.status_code == 200
        lines = r.iter_lines()  # kept open: only r.close() below hangs up
        assert next(line for line in lines if line.startswith("data: "))
        assert _unfinished(tiny_app_handle) == 1
        r.close()
    left = time.monotonic()
    while _unfinished(tiny_app_handle) and time.monotonic() - left < 10:
        time.sleep(0.05)
    elapsed = time.monotonic() - left
    assert _unfinished(tiny_app_handle) == 0, "engine kept generating for a gone client"
    assert elapsed < 2.0, f"abort took {elapsed:.2f} s"
