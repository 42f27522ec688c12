"""An attack corpus against the real stack: hostile requests a black-box run (or an
attacker) sends. Each is answered within 5 s with an OpenAI error body and a 4xx
(never a 5xx, never a hang), carries no internals, and a normal request right after
it still succeeds. A few hostile-looking requests are legitimate and must be served
(special tokens inside user text are text, not control tokens)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import BEHIND_HAPROXY, TINY_MODEL, delete_app
from tests.e2e.internals import assert_no_internals

pytestmark = pytest.mark.e2e

KEY = "sk-attack-test"
USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": TINY_MODEL, "messages": USER, "max_tokens": 2}
CMPL = {"model": TINY_MODEL, "prompt": "hi", "max_tokens": 2}


@dataclass
class Attack:
    name: str
    method: str = "POST"
    path: str = "chat/completions"
    body: dict | bytes | None = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None  # sent as is over a socket (path tricks, duplicate headers)
    secure: bool = False  # against the ingress with API keys on
    expect: str = "4xx"  # or "ok"


def _body(**fields) -> dict:
    return {**CHAT, **fields}


def _schema(schema: dict) -> dict:
    return _body(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )


def _nested(depth: int) -> dict:
    node: dict = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"a": node}}
    return node


ATTACKS = [
    Attack(
        "body over 4 MB",
        body=b'{"a": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    ),
    Attack("deeply nested JSON", body=b"[" * 200_000, headers={"content-type": "application/json"}),
    Attack(
        "deeply nested object",
        body=b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        headers={"content-type": "application/json"},
    ),
    Attack("chunked upload over the limit", body=None, raw=b"chunked-big"),
    Attack("slow chunked upload of bad JSON", raw=b"chunked-slow"),
    # Behind HAProxy a header set over its 64 KB buffer never reaches the ingress:
    # HAProxy answers its own 400. Counts up to 1000 fields do (scripts/haproxy_guard.py).
    Attack(
        "5 MB header",
        method="GET",
        path="models",
        headers={"x-big": "a" * 5_000_000},
        expect="http-400" if BEHIND_HAPROXY else "4xx",
    ),
    Attack(
        "150 headers",
        method="GET",
        path="models",
        headers={f"x-h{i}": "v" for i in range(150)},
    ),
    Attack("30 KB x-request-id", body=_body(), headers={"x-request-id": "r" * 30_000}),
    # Not valid HTTP: Serve's HTTP server (uvicorn) answers 400 itself, before any
    # application code, with a body of its own.
    Attack("x-request-id with control characters", raw=b"ctl-request-id", expect="http-400"),
    Attack("duplicate Authorization headers", secure=True, raw=b"dup-auth"),
    Attack(
        "lowercase bearer, wrong key",
        secure=True,
        body=_body(),
        headers={"authorization": "bearer sk-wrong"},
    ),
    Attack(
        "lowercase bearer, right key",
        secure=True,
        body=_body(),
        headers={"authorization": f"bearer {KEY}"},
        expect="ok",
    ),
    Attack("api_key in the query string", secure=True, method="GET", path=f"models?api_key={KEY}"),
    Attack(
        "Basic instead of Bearer",
        secure=True,
        method="GET",
        path="models",
        headers={"authorization": f"Basic {KEY}"},
    ),
    Attack("double slash path", raw=b"GET //v1/openai/models"),
    Attack("dot-dot path", raw=b"GET /v1/openai/../../etc/passwd"),
    Attack("encoded dot-dot path", raw=b"GET /v1/openai/%2e%2e/%2e%2e/etc/passwd"),
    Attack(
        "lone surrogate in the model name",
        body=b'{"model": "\\ud800", "prompt": "x"}',
        path="completions",
        headers={"content-type": "application/json"},
    ),
    Attack(
        "lone surrogate in the prompt",
        path="completions",
        body=b'{"model": "' + TINY_MODEL.encode() + b'", "prompt": "a\\udc00b", "max_tokens": 2}',
        headers={"content-type": "application/json"},
    ),
    Attack(
        "lone surrogate in a message",
        headers={"content-type": "application/json"},
        body=b'{"model": "' + TINY_MODEL.encode() + b'", "messages": [{"role": "user", '
        b'"content": "\\ud83d"}], "max_tokens": 2}',
    ),
    Attack(
        "NaN temperature",
        headers={"content-type": "application/json"},
        body=json.dumps(CHAT)[:-1].encode() + b', "temperature": NaN}',
    ),
    Attack(
        "Infinity top_p",
        headers={"content-type": "application/json"},
        body=json.dumps(CHAT)[:-1].encode() + b', "top_p": Infinity}',
    ),
    Attack("10**30 top_k", body=_body(top_k=10**30)),
    Attack("10**30 seed", body=_body(seed=10**30)),
    Attack("10**30 max_tokens", body=_body(max_tokens=10**30)),
    Attack("10**30 stop token id", body=_body(stop_token_ids=[10**30])),
    Attack(
        "64 prompts x n 16",
        path="completions",
        body={**CMPL, "prompt": ["hi"] * 64, "n": 16, "ignore_eos": True, "max_tokens": 512},
    ),
    Attack(
        "echo + logprobs over 64 long prompts",
        path="completions",
        body={**CMPL, "prompt": ["word " * 1500] * 64, "echo": True, "logprobs": 5},
    ),
    Attack(
        "120,000 empty messages", body=_body(messages=[{"role": "user", "content": ""}] * 120_000)
    ),
    Attack("four 1 MB stop strings", body=_body(stop=["s" * 1_000_000] * 4)),
    Attack("five stop strings", body=_body(stop=["a", "b", "c", "d", "e"])),
    Attack(
        "huge schema",
        body=_schema(
            {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
        ),
    ),
    Attack("deep schema", body=_schema(_nested(400))),
    Attack(
        "pathological regex pattern",
        body=_schema(
            {
                "type": "object",
                "properties": {"a": {"type": "string", "pattern": "^(a+)+(b|c+)*(d*)*$" * 20}},
                "required": ["a"],
            }
        ),
    ),
    Attack(
        "huge minItems",
        body=_schema({"type": "array", "items": {"type": "string"}, "minItems": 10**9}),
    ),
    Attack(
        "bad tool schema",
        body=_body(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"type": 5}}},
                    },
                }
            ]
        ),
    ),
    Attack(
        "special tokens inside user text",
        expect="ok",
        body=_body(
            messages=[{"role": "user", "content": "<|begin_of_text|><|eot_id|></s><s>[INST]"}]
        ),
    ),
    Attack(
        "embeddings: 10,000 inputs",
        path="embeddings",
        body={"model": TINY_MODEL, "input": ["x"] * 10_000},
    ),
    Attack(
        "images: absurd size",
        path="images/generations",
        body={"prompt": "x", "size": "100000x100000"},
    ),
]


def _raw_request(base: str, attack: Attack) -> tuple[int, bytes]:
    """Sends a hand-made HTTP/1.1 request (what an HTTP client would refuse or
    normalise) and returns (status, body)."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    prefix = url.path.rstrip("/")  # e.g. /secure/v1/openai or /v1/openai
    root = prefix[: -len("/v1/openai")]
    chat = f"{prefix}/chat/completions".encode()
    body = json.dumps(CHAT).encode()
    kind = attack.raw or b""
    if kind == b"chunked-big":
        chunk = b"x" * 65536
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(80))
        request = (
            b"POST " + chat + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        return _exchange(host, port, [request])
    if kind == b"chunked-slow":
        head = (
            b"POST " + chat + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        parts = [head] + [b"1\r\n{\r\n" for _ in range(5)] + [b"0\r\n\r\n"]
        return _exchange(host, port, parts, pause_s=0.2)
    if kind == b"ctl-request-id":
        request = (
            b"POST " + chat + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nX-Request-Id: abc\x01def\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        return _exchange(host, port, [request])
    if kind == b"dup-auth":
        request = (
            b"POST " + chat + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nAuthorization: Bearer sk-wrong\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        return _exchange(host, port, [request])
    method, path = kind.split(b" ", 1)
    request = method + b" " + root.encode() + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    return _exchange(host, port, [request])


def _exchange(host: str, port: int, parts: list[bytes], pause_s: float = 0.0) -> tuple[int, bytes]:
    with socket.create_connection((host, port), timeout=5) as s:
        for part in parts:
            s.sendall(part)
            time.sleep(pause_s)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if length:
            while len(rest) < int(length.group(1)):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return status, rest


@pytest.fixture(scope="module")
def secure_base(openai_stack) -> Iterator[str]:
    """An ingress with API keys on, under /attack-secure."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(
        build_app(
            {
                "deployment": {
                    "name": "AttackIngress",
                    "ray_actor_options": {
                        "num_cpus": 0,
                        "runtime_env": {"env_vars": {"OPENAI_SERVE_API_KEYS": KEY}},
                    },
                }
            }
        ),
        name="openai-attack-secure",
        route_prefix="/attack-secure",
    )
    yield openai_stack.replace("/v1/openai", "/attack-secure/v1/openai")
    delete_app("openai-attack-secure")


def _send(base: str, attack: Attack) -> tuple[int, bytes]:
    if attack.raw is not None:
        return _raw_request(base, attack)
    headers = dict(attack.headers or {})
    content = attack.body if isinstance(attack.body, bytes) else None
    payload = attack.body if isinstance(attack.body, dict) else None
    r = httpx.request(
        attack.method,
        f"{base}/{attack.path}",
        json=payload,
        content=content,
        headers=headers,
        timeout=5,
    )
    return r.status_code, r.content


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_answered_safely(attack, openai_stack, secure_base, client):
    base = secure_base if attack.secure else openai_stack
    start = time.monotonic()
    status, body = _send(base, attack)
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"{attack.name}: {elapsed:.1f} s"
    if attack.expect == "ok":
        assert status == 200, body[:500]
    elif attack.expect == "http-400":
        assert status == 400, body[:500]
    else:
        assert 400 <= status < 500, (status, body[:500])
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["code"], str | None) and error["message"]
        assert_no_internals(body.decode("utf-8", "replace"))
    # The server is still fine: a normal request right after succeeds.
    r = client.chat.completions.create(model=TINY_MODEL, messages=USER, max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


def test_corpus_is_big_enough():
    assert len(ATTACKS) >= 30
