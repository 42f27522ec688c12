"""An engine that fails mid-request: in-band SSE error after the first bytes, a clean
500 before them, no internals in either, and the SDK raises."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "test/faulty"


@pytest.fixture(scope="module")
def faulty_app(openai_stack):
    from ray import serve

    from deployments.contract import MODEL_CARD_KEY
    from deployments.llm.config import LLMAppConfig
    from deployments.llm.server import LLMServer
    from tests.fakes import FailingEngine

    config = LLMAppConfig(model=MODEL, model_source="/tmp")
    app = serve.deployment(LLMServer).options(
        name="faulty", user_config={MODEL_CARD_KEY: config.card().model_dump(mode="json")},
        ray_actor_options={"num_cpus": 0},
    ).bind(config.model_dump(mode="json"), engine_cls=FailingEngine)
    serve.run(app, name="faulty", route_prefix=None)
    yield
    serve.delete("faulty")


def test_mid_stream_failure_is_an_sse_error_event(openai_stack, client, faulty_app):
    with httpx.stream("POST", f"{openai_stack}/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "stream": True}) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert '"error"' in events[-2] and "deadbeef" not in events[-2]
    assert "Internal server error" in events[-2]
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
            pass


def test_failure_before_output_is_a_clean_500(openai_stack, client, faulty_app):
    with pytest.raises(openai.InternalServerError) as info:
        client.completions.create(model=MODEL, prompt="hi")
    err = info.value.body
    assert err["type"] == "server_error" and "deadbeef" not in err["message"]
    assert "request" in err["message"]
