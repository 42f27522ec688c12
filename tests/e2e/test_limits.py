"""Bounded work per request, on the real stack: what a black-box run measured before
(a pathological schema pattern stalling the engine for minutes, 10**30 in top_k as a
500, unbounded sequences and stop strings) is now a quick 400 naming the field, and a
huge prompt no longer stalls the other streams of its replica.

Run with `-s` to see the measured gap.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import TINY_MODEL
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": TINY_MODEL, "messages": USER, "max_tokens": 2}
CMPL = {"model": TINY_MODEL, "prompt": "hi", "max_tokens": 2}
# The black-box run's ~300-byte schema (its pattern repeated to ~400 bytes here).
PATHOLOGICAL = {
    "type": "object",
    "properties": {"a": {"type": "string", "pattern": "^(a+)+(b|c+)*(d*)*$" * 20}},
    "required": ["a"],
}


def _unfinished(handle) -> int:
    return handle.stats.remote().result()["unfinished_requests"]


def _error(r: httpx.Response) -> dict:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    return r.json()["error"]


def test_pathological_schema_pattern_is_refused_quickly(openai_stack, client, tiny_app_handle):
    body = {
        **CHAT,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": PATHOLOGICAL},
        },
    }
    start = time.monotonic()
    r = httpx.post(f"{openai_stack}/chat/completions", json=body, timeout=30)
    elapsed = time.monotonic() - start
    error = _error(r)
    assert elapsed < 5, elapsed
    assert error["param"] == "response_format.json_schema.schema.properties.a.pattern"
    # Nothing reached the engine, and a normal request right after is served.
    assert _unfinished(tiny_app_handle) == 0
    r = client.chat.completions.create(
        model=TINY_MODEL, messages=USER, max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 2


def test_sixty_five_sequences_are_refused(openai_stack):
    r = httpx.post(f"{openai_stack}/completions", json={**CMPL, "prompt": ["x"] * 5, "n": 13})
    error = _error(r)
    assert error["param"] == "n" and "64" in error["message"]


def test_five_stop_strings_are_refused(openai_stack):
    r = httpx.post(f"{openai_stack}/chat/completions", json={**CHAT, "stop": list("abcde")})
    assert _error(r)["param"] == "stop"


def test_an_integer_past_64_bits_is_a_400(openai_stack):
    r = httpx.post(f"{openai_stack}/chat/completions", json={**CHAT, "top_k": 10**30})
    assert _error(r)["param"] == "top_k"


def test_ignore_eos_without_max_tokens_for_two_sequences_is_refused_by_the_model(openai_stack):
    # The model's bound (deployments/llm/plan.py): under ignore_eos every sequence runs
    # to max_tokens, and 2 x what the context leaves is past the model's cap.
    body = {"model": TINY_MODEL, "prompt": "x", "n": 2, "ignore_eos": True}
    r = httpx.post(f"{openai_stack}/completions", json=body, timeout=30)
    assert _error(r)["param"] == "ignore_eos"


def test_huge_prompts_do_not_stall_another_stream(openai_stack):
    """20 huge prompts, refused, while a stream of the same replica flows: 4 MB ones
    stop at the ingress (max_prompt_chars), ~1 MB ones reach the replica, which renders
    and tokenises them off its event loop before refusing them (prompt tokens)."""
    text = "hello world, this is a long prompt. "
    huge = [
        (text * (4_000_000 // len(text))) if i % 2 else (text * (1_000_000 // len(text)))
        for i in range(20)
    ]
    gaps: list[float] = []
    done = threading.Event()

    def stream_until_done() -> None:
        body = {**CMPL, "max_tokens": 1900, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=120) as http:
            while not done.is_set():
                with http.stream("POST", f"{openai_stack}/completions", json=body) as r:
                    assert r.status_code == 200
                    last = None
                    for line in r.iter_lines():
                        if done.is_set():
                            break  # leaving the block hangs up: the engine aborts it
                        if not line.startswith("data: "):
                            continue
                        now = time.monotonic()
                        if last is not None:
                            gaps.append(now - last)
                        last = now

    def refuse(prompt: str) -> dict:
        body = {**CHAT, "messages": [{"role": "user", "content": prompt}]}
        r = httpx.post(f"{openai_stack}/chat/completions", json=body, timeout=120)
        return _error(r)

    def flowing() -> bool:
        if gaps:
            return True
        assert not streaming.done(), streaming.exception()
        return False

    with ThreadPoolExecutor(max_workers=21) as pool:
        streaming = pool.submit(stream_until_done)
        try:  # the stream flows before the huge prompts start
            wait_until(flowing, "the other stream's first chunks", timeout_s=120, every_s=0.05)
        except AssertionError:
            done.set()  # else the pool's shutdown waits on the endless stream
            raise
        started = time.monotonic()
        errors = list(pool.map(refuse, huge))
        took = time.monotonic() - started
        done.set()
        streaming.result()
    assert {e["param"] for e in errors} == {"messages"}
    largest = max(gaps)
    print(
        f"\nlargest inter-chunk gap of another stream while 20 huge prompts were refused: "
        f"{largest:.3f} s ({len(gaps)} chunks; the refusals took {took:.1f} s)"
    )
    assert largest < 2.0
