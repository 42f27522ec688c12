"""The Responses API through real Serve + vLLM + HTTP, with the official `openai` SDK:
bodies and every stream event validated against OpenAI's own schemas, a forced
function call round trip, structured output, stored responses and their context on
SQLite (the session ingress) and on PostgreSQL (a second ingress with API keys, which
is also restarted), key isolation, a client that leaves, and bad input."""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import TINY_MODEL, delete_app
from tests.e2e.internals import assert_no_internals
from tests.openapi import validate, validate_event

pytestmark = pytest.mark.e2e

KEYS = ("sk-resp-one", "sk-resp-two")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        # Enums and booleans only: a random model given a free string may write
        # whitespace or text until max_output_tokens (the call is then incomplete).
        "properties": {"unit": {"enum": ["c", "f"]}, "rain": {"type": "boolean"}},
        "required": ["unit", "rain"],
        "additionalProperties": False,
    },
    "strict": True,
}
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]}},
    "required": ["ok", "color"],
    "additionalProperties": False,
}


def _raw(client: openai.OpenAI, **kwargs) -> dict:
    """responses.create's body as sent on the wire (validated against the spec)."""
    body = client.responses.with_raw_response.create(
        model=TINY_MODEL, **kwargs
    ).http_response.json()
    validate("Response", body)
    return body


def _events(base: str, body: dict, headers: dict | None = None) -> list[dict]:
    """A streamed response's events, each checked: `event:` names its `type`, and the
    data fits the schema of that type."""
    events = []
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST", f"{base}/responses", json={"stream": True, **body}, headers=headers
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert event["type"] == kind
                validate_event(event)
                events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# --- create ----------------------------------------------------------------------------


def test_create_fits_the_schema_and_counts_tokens(client):
    body = _raw(client, input="Say hello", instructions="Be brief.", max_output_tokens=8)
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] in ("completed", "incomplete")
    usage = body["usage"]
    assert 0 < usage["output_tokens"] <= 8
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # The SDK's own view of the same endpoint.
    response = client.responses.create(model=TINY_MODEL, input="Say hello", max_output_tokens=8)
    assert response.output_text == response.output[0].content[0].text


def test_max_output_tokens_makes_it_incomplete(client):
    body = _raw(
        client, input="Count", max_output_tokens=3, temperature=1.0, extra_body={"ignore_eos": True}
    )
    assert body["usage"]["output_tokens"] == 3
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_events_in_order_and_deltas_add_up(openai_stack, client):
    events = _events(
        openai_stack, {"model": TINY_MODEL, "input": "Tell a story", "max_output_tokens": 12}
    )
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    final = events[-1]["response"]
    assert deltas == done["text"] == final["output"][0]["content"][0]["text"]
    assert final["usage"]["output_tokens"] > 0
    # Stored before the last event: GET has it at once.
    assert client.responses.retrieve(final["id"]).output_text == deltas
    # The SDK's stream helper on the same endpoint.
    # (get_final_response wants response.completed; 12 tokens of a random model end in
    # response.incomplete, whose response the SDK hands over as the last event.)
    with client.responses.stream(model=TINY_MODEL, input="Tell a story", max_output_tokens=12) as s:
        seen = list(s)
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert seen[-1].type in ("response.completed", "response.incomplete")
    assert seen[-1].response.output_text == text and text


def test_forced_function_call_round_trip(openai_stack, client):
    first = _raw(
        client,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    calls = [i for i in first["output"] if i["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["call_id"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["parameters"])
    # The tool's result goes back; the model answers in text, on the stored context.
    second = _raw(
        client,
        previous_response_id=first["id"],
        input=[
            {
                "type": "function_call_output",
                "call_id": calls[0]["call_id"],
                "output": "Sunny, 21 C",
            }
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=8,
    )
    assert second["output"][0]["type"] == "message"
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    # Streamed, the call has its argument events.
    events = _events(
        openai_stack,
        {"model": TINY_MODEL, "input": "Weather?", "tools": [WEATHER], "tool_choice": "required"},
    )
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "get_weather"
    jsonschema.validate(json.loads(done["arguments"]), WEATHER["parameters"])


def test_json_schema_output_parses(client):
    fmt = {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}
    response = client.responses.create(
        model=TINY_MODEL, input="Answer", text={"format": fmt}, max_output_tokens=200
    )
    jsonschema.validate(json.loads(response.output_text), SCHEMA)


def test_previous_response_id_carries_context_on_sqlite(client):
    _check_context(client)


def _check_context(client: openai.OpenAI) -> None:
    """Three turns chained by previous_response_id: each sees the ones before (its
    input tokens grow by at least the earlier turns' output), and the stored objects
    can be read, listed and deleted."""
    first = client.responses.create(model=TINY_MODEL, input="My name is Ada.", max_output_tokens=6)
    second = client.responses.create(
        model=TINY_MODEL,
        previous_response_id=first.id,
        input="What is my name?",
        max_output_tokens=6,
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens >= first.usage.input_tokens + first.usage.output_tokens
    third = client.responses.create(
        model=TINY_MODEL, previous_response_id=second.id, input="Again?", max_output_tokens=6
    )
    assert third.usage.input_tokens >= second.usage.input_tokens + second.usage.output_tokens
    got = client.responses.retrieve(second.id)
    assert got.output_text == second.output_text and got.usage == second.usage
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=TINY_MODEL, previous_response_id=second.id, input="x")


def test_store_false_keeps_nothing(client):
    response = client.responses.create(
        model=TINY_MODEL, input="hi", store=False, max_output_tokens=2
    )
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_input_items_pages(client):
    turns = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    response = client.responses.create(model=TINY_MODEL, input=turns, max_output_tokens=2)
    page = client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == ["turn 0", "turn 1"] and page.has_more
    rest = client.responses.input_items.list(response.id, after=page.data[-1].id, order="asc")
    assert [i.content[0].text for i in rest.data] == ["turn 2", "turn 3", "turn 4"]
    newest = client.responses.input_items.list(response.id, limit=1)
    assert newest.data[0].content[0].text == "turn 4"  # OpenAI's default order: desc


def test_client_that_leaves_aborts_the_generation(openai_stack, tiny_app_handle):
    def unfinished() -> int:
        return tiny_app_handle.stats.remote().result()["unfinished_requests"]

    assert unfinished() == 0
    body = {
        "model": TINY_MODEL,
        "input": "Go on",
        "max_output_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(timeout=60) as http:
        r = http.send(
            http.build_request("POST", f"{openai_stack}/responses", json=body), stream=True
        )
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if "response.output_text.delta" in line)
        assert unfinished() == 1
        r.close()
    deadline = time.monotonic() + 10
    while unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unfinished() == 0, "engine kept generating for a gone client"


# --- bad input -------------------------------------------------------------------------

BAD = [
    ({"input": "x"}, "model"),
    ({"model": TINY_MODEL}, "input"),
    ({"model": TINY_MODEL, "input": 5}, "input"),
    ({"model": "no/such-model", "input": "x"}, "model"),
    ({"model": TINY_MODEL, "input": [{"type": "web_search_call"}]}, "input.0.type"),
    (
        {
            "model": TINY_MODEL,
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": "https://x"}]}
            ],
        },
        "input.0.content.0.type",
    ),
    ({"model": TINY_MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
    (
        {"model": TINY_MODEL, "input": [{"type": "function_call_output", "output": "x"}]},
        "input.0.call_id",
    ),
    ({"model": TINY_MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    (
        {"model": TINY_MODEL, "input": "x", "tools": [{"type": "function", "name": "bad name!"}]},
        "tools.0.name",
    ),
    ({"model": TINY_MODEL, "input": "x", "tool_choice": "required"}, None),
    (
        {
            "model": TINY_MODEL,
            "input": "x",
            "tool_choice": {"type": "function", "name": "nope"},
            "tools": [WEATHER],
        },
        None,
    ),
    ({"model": TINY_MODEL, "input": "x", "reasoning": {"effort": "high"}}, "reasoning"),
    ({"model": TINY_MODEL, "input": "x", "background": True}, "background"),
    ({"model": TINY_MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": TINY_MODEL, "input": "x", "temperature": 3}, "temperature"),
    (
        {
            "model": TINY_MODEL,
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "nope"}}},
        },
        "text.format",
    ),
    (
        {"model": TINY_MODEL, "input": "x", "previous_response_id": "resp_missing"},
        "previous_response_id",
    ),
    (
        {"model": TINY_MODEL, "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}},
        "metadata",
    ),
    ({"model": TINY_MODEL, "input": [{"role": "user", "content": "x"}] * 5000}, "input"),
    ({"model": TINY_MODEL, "input": "x", "truncation": "auto"}, "truncation"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_shaped_4xx(openai_stack, body, param):
    r = httpx.post(f"{openai_stack}/responses", json=body, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] is None or isinstance(error["code"], str)
    if param is not None:
        assert error["param"] == param, error
    assert_no_internals(r.text)


def test_bad_ids_are_404s(openai_stack):
    for method, path in [
        ("GET", "/responses/resp_nope"),
        ("DELETE", "/responses/resp_nope"),
        ("GET", "/responses/resp_nope/input_items"),
    ]:
        r = httpx.request(method, f"{openai_stack}{path}", timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


# --- PostgreSQL, API keys, restart -----------------------------------------------------


@pytest.fixture(scope="module")
def pg_base(openai_stack, postgres_url):
    """A second ingress with API keys whose store is PostgreSQL (a real server from
    Debian's package, started by the fixture), under /pg."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(
        build_app(
            {
                "state": {"url": postgres_url},
                "catalog_refresh_s": 0.5,
                "deployment": {
                    "name": "PgIngress",
                    "ray_actor_options": {
                        "runtime_env": {"env_vars": {"OPENAI_SERVE_API_KEYS": ",".join(KEYS)}}
                    },
                },
            }
        ),
        name="openai-pg",
        route_prefix="/pg",
    )
    yield openai_stack.replace("/v1/openai", "/pg/v1/openai")
    delete_app("openai-pg")


def _pg_client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)


def test_previous_response_id_carries_context_on_postgresql(pg_base):
    _check_context(_pg_client(pg_base, KEYS[0]))


def test_another_key_gets_404(pg_base):
    mine, theirs = _pg_client(pg_base, KEYS[0]), _pg_client(pg_base, KEYS[1])
    response = mine.responses.create(model=TINY_MODEL, input="secret", max_output_tokens=2)
    for call in (
        lambda: theirs.responses.retrieve(response.id),
        lambda: theirs.responses.input_items.list(response.id),
        lambda: theirs.responses.delete(response.id),
        lambda: theirs.responses.create(
            model=TINY_MODEL, previous_response_id=response.id, input="x"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.responses.retrieve(response.id).id == response.id


def test_stored_response_survives_an_ingress_restart(pg_base):
    import ray
    from ray.serve.context import _get_global_client

    client = _pg_client(pg_base, KEYS[0])
    response = client.responses.create(model=TINY_MODEL, input="remember me", max_output_tokens=3)

    details = _get_global_client().get_serve_details()
    deployment = details["applications"]["openai-pg"]["deployments"]["PgIngress"]
    [old] = [r for r in deployment["replicas"] if str(r["state"]).endswith("RUNNING")]
    ray.kill(ray.get_actor(old["actor_name"], namespace="serve"), no_restart=True)

    deadline = time.monotonic() + 120
    while True:  # Serve starts a new replica; until then the proxy answers 5xx
        try:
            got = client.responses.retrieve(response.id)
            break
        except (openai.APIStatusError, openai.APIConnectionError):
            assert time.monotonic() < deadline, "the ingress did not come back"
            time.sleep(0.5)
    details = _get_global_client().get_serve_details()
    running = [
        r["replica_id"]
        for r in details["applications"]["openai-pg"]["deployments"]["PgIngress"]["replicas"]
        if str(r["state"]).endswith("RUNNING")
    ]
    assert old["replica_id"] not in running
    assert got.output_text == response.output_text
