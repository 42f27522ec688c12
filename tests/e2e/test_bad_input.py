"""Bad input never hurts: a generated corpus of malformed and out-of-range requests,
sent over HTTP. Every answer must be a 4xx with an OpenAI error object; nothing may
hang or crash a replica, and a normal request still succeeds afterwards."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import TINY_APP, TINY_MODEL

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hi"}]
CHAT_OK = {"model": TINY_MODEL, "messages": USER, "max_tokens": 2}
CMPL_OK = {"model": TINY_MODEL, "prompt": "hi", "max_tokens": 2}

# Values that are wrong for the field, whatever the endpoint.
BAD_COMMON = {
    "model": [1, None, [], {}, ""],
    "max_tokens": [-1, 0, "10", 1.5, True, 10**30, []],
    "n": [0, -1, 17, "2", 2.0, None],
    "temperature": [-0.1, 2.01, "hot", [], {}],
    "top_p": [0, 1.01, -1, "1"],
    "presence_penalty": [2.5, -2.5, "0"],
    "frequency_penalty": [3, -3, []],
    "seed": [-1, "x", 2**64, 1.5],
    "stop": [["a", "b", "c", "d", "e"], [""], 1, [1], {"a": 1}],
    "stream": ["yes", 1, []],
    "stream_options": ["x", 1, {"include_usage": "yes"}],
    "top_k": [-2, "5", 1.5],
    "min_p": [-0.1, 1.5],
    "repetition_penalty": [0, -1, 11],
    "stop_token_ids": [[-1], "1", [1.5], [10**12]],
    "ignore_eos": ["no", 2],
    "response_format": [
        {"type": "xml"},
        {"type": "json_schema"},
        "json",
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
    ],
}
BAD_CHAT = {
    "messages": [
        "hi",
        [],
        [1],
        [{"role": "robot", "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": 1}],
        [{"content": "x"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
        [{"role": "user", "content": [{"type": "text"}]}],
        None,
    ],
    "logprobs": ["yes", 1],
    "top_logprobs": [21, -1, "3"],
    "max_completion_tokens": [0, "x"],
    "tools": [
        "x",
        [{"type": "x"}],
        [{"type": "function"}],
        [{"type": "function", "function": {"name": "bad name!"}}],
    ],
    "tool_choice": ["sometimes", {"type": "function", "function": {"name": "nope"}}, 5],
}
BAD_CMPL = {
    "prompt": ["", [], [[]], [-1], [10**12], [""], 5, None, [["a"]], ["x"] * 65, [5] * 3000],
    "logprobs": [6, -1, "2", True],
    "echo": ["yes", 1],
    "suffix": ["tail", 5],
}
MALFORMED = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"123",
    b'"s"',
    b"{'a': 1}",
    b"\xff\xfe\x00",
    b"{" * 5000 + b"}" * 5000,
    b'{"model": "x",}',
    b"[" * 100000,
]


def _cases() -> list[tuple[str, str, dict | bytes, dict]]:
    cases = []
    for path, ok, specific in (
        ("chat/completions", CHAT_OK, BAD_CHAT),
        ("completions", CMPL_OK, BAD_CMPL),
    ):
        for field, values in {**BAD_COMMON, **specific}.items():
            for value in values:
                cases.append(("POST", path, {**ok, field: value}, {}))
        for body in MALFORMED:
            cases.append(("POST", path, body, {"content-type": "application/json"}))
        cases.append(("POST", path, {**ok, "model": "no/such"}, {}))
        cases.append(("POST", path, json.dumps(ok).encode(), {"content-type": "text/plain"}))
        cases.append(
            (
                "POST",
                path,
                b"{" + b" " * (5 * 1024 * 1024) + b"}",
                {"content-type": "application/json"},
            )
        )
        cases.append(("GET", path, b"", {}))
        cases.append(("POST", path, {k: v for k, v in ok.items() if k != "model"}, {}))
    cases.append(("DELETE", "models", b"", {}))
    cases.append(("GET", "no/such/route", b"", {}))
    cases.append(("GET", "models/no-such-model", b"", {}))
    return cases


CASES = _cases()


def test_corpus_is_large_enough():
    assert len(CASES) >= 200


async def _send(http: httpx.AsyncClient, base: str, case) -> httpx.Response:
    method, path, body, headers = case
    kw = {"json": body} if isinstance(body, dict) else {"content": body}
    return await http.request(method, f"{base}/{path}", headers=headers, **kw)


def test_every_bad_request_gets_a_clean_4xx(openai_stack, client):
    async def run():
        limits = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=60) as http:

            async def one(case):
                async with limits:
                    return case, await _send(http, openai_stack, case)

            return await asyncio.gather(*(one(c) for c in CASES))

    failures = []
    for case, r in asyncio.run(run()):
        try:
            assert 400 <= r.status_code < 500, r.status_code
            body = r.json()
            assert set(body) == {"error"}
            err = body["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert isinstance(err["message"], str) and err["message"]
            assert isinstance(err["type"], str)
            assert err["param"] is None or isinstance(err["param"], str)
            assert err["code"] is None or isinstance(err["code"], str)
        except (AssertionError, ValueError) as exc:
            failures.append(
                (case[0], case[1], str(case[2])[:120], r.status_code, r.text[:200], repr(exc))
            )
    assert not failures, "\n".join(map(str, failures[:20]))

    # The server keeps serving, and no replica was replaced.
    from ray import serve

    # ignore_eos: the tiny model samples at random and may pick EOS first.
    r = client.chat.completions.create(**CHAT_OK, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 2
    status = serve.status().applications[TINY_APP]
    assert str(getattr(status.status, "value", status.status)) == "RUNNING"


def test_param_names_the_field(openai_stack):
    cases = [
        ("chat/completions", {**CHAT_OK, "temperature": 3}, "temperature"),
        (
            "chat/completions",
            {**CHAT_OK, "messages": [{"role": "x", "content": "y"}]},
            "messages.0.role",
        ),
        ("completions", {**CMPL_OK, "max_tokens": -5}, "max_tokens"),
        ("completions", {**CMPL_OK, "n": 99}, "n"),
    ]
    for path, body, param in cases:
        r = httpx.post(f"{openai_stack}/{path}", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
