"""API keys: hashed and compared in constant time, required on /v1/openai and /metrics (unless switched off), never on /health, a deploy without any key fails, and the key's id (never the key) reaches the request."""

import hashlib
import hmac

import pytest

from ingress import auth
from ingress.auth import ApiKeys, AuthMiddleware, api_key_id, digest, key_id
from ingress.config import AuthConfig
from ingress.guards import HeaderLimitMiddleware
from ingress.metrics import NodeMetrics
from tests.ingress.fakes import API, Stack, error_of, standard_stack

ENV = "TEST_OPENAI_SERVE_KEYS"


def _stack(
    monkeypatch: pytest.MonkeyPatch,
    keys: str = "key-1, key-2",
    stack: dict[str, object] | None = None,
    **auth_config: object,
) -> Stack:
    monkeypatch.setenv(ENV, keys)
    return standard_stack(
        config={"auth": {"enabled": True, "api_keys_env": ENV, **auth_config}}, **(stack or {})
    )


# --- ApiKeys -------------------------------------------------------------------------------


def test_check_accepts_only_configured_keys():
    keys = ApiKeys([digest("a"), digest("b")])
    assert keys.check("a") and keys.check("b")
    for wrong in ("c", "a ", "A", "", None):
        assert not keys.check(wrong)


def test_check_compares_against_every_key_whichever_matches(monkeypatch):
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    known = [digest("first"), digest("second"), digest("third")]
    keys = ApiKeys(known)
    for presented in ("first", "third", "wrong"):
        compared.clear()
        keys.check(presented)
        assert compared == known, presented


def test_keys_from_env_are_split_and_stripped(monkeypatch):
    monkeypatch.setenv(ENV, " one ,two,, ")
    keys = ApiKeys.from_config(AuthConfig(api_keys_env=ENV))
    assert keys.check("one") and keys.check("two") and not keys.check("")


def test_keys_from_a_hash_file(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    hashes = tmp_path / "keys.sha256"
    hashes.write_text(
        f"# team keys\n{hashlib.sha256(b'filed').hexdigest()}  # ci\n\n"
        f"{hashlib.sha256(b'other').hexdigest().upper()}\n"
    )
    keys = ApiKeys.from_config(AuthConfig(api_keys_env=ENV, api_key_hashes_file=str(hashes)))
    assert keys.check("filed") and keys.check("other") and not keys.check("nope")


def test_env_and_file_keys_combine(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "plain")
    hashes = tmp_path / "keys"
    hashes.write_text(hashlib.sha256(b"hashed").hexdigest())
    keys = ApiKeys.from_config(AuthConfig(api_keys_env=ENV, api_key_hashes_file=str(hashes)))
    assert keys.check("plain") and keys.check("hashed")


def test_auth_enabled_without_any_key_fails_the_build(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match=ENV):
        standard_stack(config={"auth": {"enabled": True, "api_keys_env": ENV}})


def test_auth_disabled_needs_no_key(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    app = standard_stack(config={"auth": {"enabled": False, "api_keys_env": ENV}}).app
    assert [m.cls for m in app.user_middleware] == [HeaderLimitMiddleware]


@pytest.mark.anyio
async def test_auth_disabled_serves_without_a_key(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    async with standard_stack().client() as client:
        response = await client.get(f"{API}/models")
    assert response.status_code == 200


# --- AuthMiddleware through the app --------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic a2V5LTE=", "key-1", "Bearer", "Bearer "]
)
async def test_api_without_a_valid_key_is_401(monkeypatch, authorization):
    stack = _stack(monkeypatch)
    headers = {"authorization": authorization} if authorization else {}
    async with stack.client(headers) as client:
        response = await client.get(f"{API}/models")
    error = error_of(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", ["Bearer key-1", "bearer key-2", "BEARER key-1", "Bearer   key-1"]
)
async def test_api_with_a_valid_key_passes(monkeypatch, authorization):
    stack = _stack(monkeypatch)
    async with stack.client({"authorization": authorization}) as client:
        response = await client.get(f"{API}/models")
    assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_post_without_key_is_refused_before_the_body_is_used(monkeypatch):
    stack = _stack(monkeypatch)
    async with stack.client() as client:
        response = await client.post(
            f"{API}/chat/completions",
            json={"model": "org/llm", "messages": [{"role": "user", "content": "hi"}]},
        )
    error_of(response, 401)
    assert stack.serve.apps["llm-1"].calls == [] and stack.controller.fetches == 0


@pytest.mark.anyio
async def test_health_is_never_protected(monkeypatch):
    stack = _stack(monkeypatch)
    async with stack.client() as client:
        response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_metrics_are_protected_by_default():
    assert AuthConfig().protect_metrics


@pytest.mark.anyio
async def test_metrics_need_the_key(monkeypatch):
    stack = _stack(monkeypatch)
    async with stack.client() as client:
        refused = await client.get("/metrics")
        allowed = await client.get("/metrics", headers={"authorization": "Bearer key-2"})
    error_of(refused, 401)
    assert allowed.status_code == 200 and allowed.text == "ray_up 1\n"
    assert allowed.headers["content-type"].startswith("text/plain")


@pytest.mark.anyio
async def test_metrics_open_when_protection_is_switched_off(monkeypatch):
    async with _stack(monkeypatch, protect_metrics=False).client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200 and response.text == "ray_up 1\n"


@pytest.mark.anyio
async def test_metrics_open_when_auth_is_off():
    async with standard_stack().client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200


@pytest.mark.anyio
async def test_metrics_failure_is_a_500_without_internals(monkeypatch):
    def down(url: str, timeout_s: float) -> str:
        raise OSError("connection refused to 10.0.0.7:8080")

    node = NodeMetrics(lambda: "http://10.0.0.7:8080/metrics", down)
    stack = _stack(monkeypatch, stack={"node_metrics": node})
    headers = {"x-request-id": "R", "authorization": "Bearer key-1"}
    async with stack.client(headers) as client:
        response = await client.get("/metrics")
    error = error_of(response, 500)
    assert error["message"] == "Internal server error (request id R)."
    assert "10.0.0.7" not in response.text


# --- the key's id --------------------------------------------------------------------------


def test_match_names_the_key_by_its_short_hash_never_the_key():
    keys = ApiKeys([digest("first"), digest("second")])
    assert keys.match("second") == hashlib.sha256(b"second").hexdigest()[:8]
    assert keys.match("first") == key_id(digest("first")) != keys.match("second")
    assert keys.match("third") is None and keys.match(None) is None and keys.match("") is None


def test_match_compares_against_every_key_whichever_matches(monkeypatch):
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    known = [digest("first"), digest("second"), digest("third")]
    for presented in ("first", "second", "third"):
        compared.clear()
        assert ApiKeys(known).match(presented) == key_id(digest(presented))
        assert compared == known, presented


@pytest.mark.anyio
async def test_the_key_id_reaches_the_app_in_a_state_of_its_own():
    seen: list[str | None] = []

    async def app(scope, receive, send):
        seen.append(api_key_id(scope))

    shared_state: dict[str, object] = {"lifespan": "value"}
    middleware = AuthMiddleware(app, ApiKeys([digest("k1"), digest("k2")]))
    for key in ("k1", "k2"):
        scope = {
            "type": "http",
            "path": f"{API}/models",
            "headers": [(b"authorization", f"Bearer {key}".encode())],
            "state": shared_state,
        }
        await middleware(scope, None, None)
    health = {"type": "http", "path": "/health", "headers": [], "state": shared_state}
    await middleware(health, None, None)
    assert seen == [key_id(digest("k1")), key_id(digest("k2")), None]
    assert shared_state == {"lifespan": "value"}  # the shared dict is never written


def test_a_per_key_limit_needs_auth():
    assert AuthConfig(max_concurrent_requests_per_key=2).max_concurrent_requests_per_key == 2
    with pytest.raises(ValueError, match=r"needs auth\.enabled"):
        AuthConfig(enabled=False, max_concurrent_requests_per_key=2)
