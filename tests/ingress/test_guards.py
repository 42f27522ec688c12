"""Header limits: too many or too large request headers get a shaped 431 before any routing or auth."""

import pytest

from tests.ingress.fakes import API, error_of, standard_stack

pytestmark = pytest.mark.anyio


async def test_headers_within_limits_pass():
    stack = standard_stack(config={"max_header_count": 20, "max_header_bytes": 2000})
    async with stack.client({f"x-h{i}": "v" for i in range(5)}) as client:
        response = await client.get("/health")
    assert response.status_code == 200


async def test_too_many_headers_is_431():
    stack = standard_stack(config={"max_header_count": 20})
    async with stack.client({f"x-h{i}": "v" for i in range(30)}) as client:
        response = await client.get(f"{API}/models")
    error = error_of(response, 431)
    assert error["code"] == "request_header_fields_too_large"
    assert "20 headers" in error["message"]


async def test_too_many_header_bytes_is_431():
    stack = standard_stack(config={"max_header_bytes": 1000})
    async with stack.client({"x-big": "v" * 1200}) as client:
        response = await client.get("/health")
    assert error_of(response, 431)["code"] == "request_header_fields_too_large"


async def test_guard_runs_before_auth(monkeypatch):
    monkeypatch.setenv("TEST_GUARD_KEYS", "k")
    stack = standard_stack(
        config={
            "max_header_count": 10,
            "auth": {"enabled": True, "api_keys_env": "TEST_GUARD_KEYS"},
        }
    )
    async with stack.client({f"x-h{i}": "v" for i in range(20)}) as client:
        response = await client.get(f"{API}/models")
    error_of(response, 431)


@pytest.mark.parametrize("request_id", ["r" * 129, "a b", "a;b", "<script>"])
async def test_bad_request_id_is_400(request_id):
    stack = standard_stack()
    async with stack.client({"x-request-id": request_id}) as client:
        response = await client.get(f"{API}/models")
    error = error_of(response, 400)
    assert (error["param"], error["code"]) == ("x-request-id", "invalid_request_id")


@pytest.mark.parametrize("request_id", ["r" * 128, "0f8c2d1e-8a7b-4c3d-9e0f-1a2b3c4d5e6f"])
async def test_short_printable_request_id_passes(request_id):
    stack = standard_stack()
    async with stack.client({"x-request-id": request_id}) as client:
        response = await client.get(f"{API}/models")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header, value",
    [
        ("x-request-disconnect-disabled", "?1"),
        ("x-request-timeout-seconds", "0"),
        ("x-request-timeout-seconds", "99999"),
    ],
)
async def test_serve_proxy_overrides_are_refused_before_any_model_call(header, value):
    stack = standard_stack()
    body = {"model": "org/llm", "messages": [{"role": "user", "content": "hi"}]}
    async with stack.client({header: value}) as client:
        response = await client.post(f"{API}/chat/completions", json=body)
    error = error_of(response, 400)
    assert (error["code"], error["param"]) == ("unsupported_header", header)
    assert stack.serve.apps["llm-1"].calls == []
