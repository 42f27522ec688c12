"""An engine that fails mid-request: in-band SSE error after the first bytes, a clean
500 before them, no internals in either, and the SDK raises."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import delete_app
from tests.e2e.internals import assert_no_internals

pytestmark = pytest.mark.e2e

MODEL = "test/faulty"


@pytest.fixture(scope="module")
def faulty_app(openai_stack):
    from ray import serve

    from deployments.llm.builder import build_app_with_engine
    from tests.fakes import FailingEngine

    # FailingEngine ignores the model directory; any existing one resolves.
    app = build_app_with_engine(
        {
            "model": MODEL,
            "model_source": "/tmp",
            "deployment": {"ray_actor_options": {"num_cpus": 0}},
        },
        engine_cls=FailingEngine,
    )
    serve.run(app, name="faulty", route_prefix=None)
    yield
    delete_app("faulty")


def test_mid_stream_failure_is_an_sse_error_event(openai_stack, client, faulty_app):
    with httpx.stream(
        "POST",
        f"{openai_stack}/chat/completions",
        timeout=30,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as r:
        assert r.status_code == 200
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert '"error"' in events[-2] and "deadbeef" not in events[-2]
    assert_no_internals(events[-2])
    assert "Internal server error" in events[-2]
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_failure_before_output_is_a_clean_500(openai_stack, client, faulty_app):
    with pytest.raises(openai.InternalServerError) as info:
        client.completions.create(model=MODEL, prompt="hi")
    err = info.value.body
    assert err["type"] == "server_error" and "deadbeef" not in err["message"]
    assert_no_internals(str(err))
    assert "request" in err["message"]
