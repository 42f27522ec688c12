"""POST/GET/DELETE /responses through the real app and pipeline, on fake Serve and a
real SQLite store: what the LLM deployment is sent, the stored turns, key isolation
and a store that is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingress.config import StateConfig
from ingress.store import Store
from tests.ingress.fakes import API, error_of, standard_stack
from tests.openapi import validate, validate_event

pytestmark = pytest.mark.anyio

URL = f"{API}/responses"
KEYS = "sk-one,sk-two"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(StateConfig(data_dir=str(tmp_path / "state")))


def _stack(store: Store, **kw):
    return standard_stack(store=store, **kw)


def _sent(stack) -> list[dict]:
    """The chat messages the LLM deployment got in its latest call."""
    return stack.serve.apps["llm-1"].calls[-1].payload.messages


async def test_create_sends_a_chat_request_and_stores_the_answer(store):
    stack = _stack(store)
    async with stack.client() as client:
        r = await client.post(URL, json={"model": "org/llm", "input": "Hi", "instructions": "Sys"})
        assert r.status_code == 200, r.text
        body = r.json()
        validate("Response", body)
        assert body["output"][0]["content"][0]["text"] == "Hello"
        assert _sent(stack) == [
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": "Hi"},
        ]
        got = await client.get(f"{URL}/{body['id']}")
        assert got.json() == body
        items = (await client.get(f"{URL}/{body['id']}/input_items")).json()
        assert [i["content"][0]["text"] for i in items["data"]] == ["Hi"]
        deleted = await client.delete(f"{URL}/{body['id']}")
        assert deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
        error_of(await client.get(f"{URL}/{body['id']}"), 404)
    assert stack.inflight("llm-1") == 0


async def test_previous_turns_come_before_the_input_without_their_instructions(store):
    stack = _stack(store)
    async with stack.client() as client:
        first = (
            await client.post(URL, json={"model": "org/llm", "input": "A", "instructions": "Sys"})
        ).json()
        r = await client.post(
            URL, json={"model": "org/llm", "input": "B", "previous_response_id": first["id"]}
        )
        assert r.status_code == 200, r.text
    assert _sent(stack) == [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "B"},
    ]


async def test_stream_is_stored_before_its_last_event(store):
    stack = _stack(store)
    async with stack.client() as client:
        r = await client.post(URL, json={"model": "org/llm", "input": "Hi", "stream": True})
        events = [
            json.loads(line.removeprefix("data: "))
            for line in r.text.splitlines()
            if line.startswith("data: ")
        ]
        for event in events:
            validate_event(event)
        final = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
        assert "".join(e.get("delta", "") for e in events) == "Hello"
        assert (await client.get(f"{URL}/{final['id']}")).json() == final
    assert stack.inflight("llm-1") == 0


async def test_store_false_keeps_nothing(store):
    stack = _stack(store)
    async with stack.client() as client:
        body = (
            await client.post(URL, json={"model": "org/llm", "input": "x", "store": False})
        ).json()
        error_of(await client.get(f"{URL}/{body['id']}"), 404)


async def test_another_key_sees_nothing(store, monkeypatch):
    monkeypatch.setenv("OPENAI_SERVE_API_KEYS", KEYS)
    stack = _stack(store, config={"auth": {"enabled": True}})
    one = {"Authorization": "Bearer sk-one"}
    two = {"Authorization": "Bearer sk-two"}
    async with stack.client() as client:
        body = (await client.post(URL, json={"model": "org/llm", "input": "x"}, headers=one)).json()
        rid = body["id"]
        for method, path in [("GET", rid), ("DELETE", rid), ("GET", f"{rid}/input_items")]:
            error_of(await client.request(method, f"{URL}/{path}", headers=two), 404)
        r = await client.post(
            URL, json={"model": "org/llm", "input": "y", "previous_response_id": rid}, headers=two
        )
        assert error_of(r, 404)["param"] == "previous_response_id"
        assert (await client.get(f"{URL}/{rid}", headers=one)).status_code == 200


async def test_a_store_that_is_down_is_a_503_without_internals(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    stack = _stack(Store(StateConfig(data_dir=str(blocker))))
    async with stack.client() as client:
        r = await client.post(URL, json={"model": "org/llm", "input": "x"})
        error = error_of(r, 503)
        assert error["code"] == "store_unavailable" and "not-a-folder" not in r.text
        assert r.headers["retry-after"]
        error_of(await client.get(f"{URL}/resp_x"), 503)
        # store: false needs no store.
        assert (
            await client.post(URL, json={"model": "org/llm", "input": "x", "store": False})
        ).status_code == 200


async def test_a_conversation_past_the_stored_size_is_refused_before_work(tmp_path):
    store = Store(StateConfig(data_dir=str(tmp_path), max_stored_bytes=1000))
    stack = _stack(store)
    async with stack.client() as client:
        r = await client.post(URL, json={"model": "org/llm", "input": "x" * 2000})
        assert error_of(r, 400)["param"] == "input"
        r = await client.post(URL, json={"model": "org/llm", "input": "x" * 2000, "store": False})
        assert r.status_code == 200
    assert len(stack.serve.apps["llm-1"].calls) == 1


async def test_bounds_name_the_responses_field(store):
    stack = _stack(store, config={"bounds": {"max_messages": 2}})
    async with stack.client() as client:
        turns = [{"role": "user", "content": "x"}] * 3
        r = await client.post(URL, json={"model": "org/llm", "input": turns})
        assert error_of(r, 400)["param"] == "input"
        r = await client.post(URL, json={"model": "org/llm", "input": "x", "max_output_tokens": 0})
        assert error_of(r, 400)["param"] == "max_output_tokens"
    assert stack.serve.apps["llm-1"].calls == []
