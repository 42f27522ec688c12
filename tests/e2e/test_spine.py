"""The spine through real Serve + vLLM (tiny model) + the official openai SDK."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello there"}]


def _collect_chat_stream(stream):
    text, finishes, usages, chunks = [], [], [], 0
    for event in stream:
        chunks += 1
        assert event.object == "chat.completion.chunk"
        for choice in event.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
                usages.append(event.usage)
    return "".join(text), finishes, usages, chunks


def test_chat_non_stream_shape_and_usage(client, tiny_tokenizer):
    r = client.chat.completions.create(
        model=TINY_MODEL, messages=HELLO, max_tokens=12, temperature=0
    )
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == TINY_MODEL
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    # The fixture model never emits a stop token greedily: it runs to max_tokens.
    assert r.choices[0].finish_reason == "length"
    prompt_ids = tiny_tokenizer.apply_chat_template(
        HELLO, tokenize=True, add_generation_prompt=True
    )
    if hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_chat_stream_equals_non_stream(client):
    whole = client.chat.completions.create(
        model=TINY_MODEL, messages=HELLO, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model=TINY_MODEL, messages=HELLO, max_tokens=16, temperature=0, stream=True
    )
    text, finishes, usages, chunks = _collect_chat_stream(stream)
    assert text == whole.choices[0].message.content
    assert finishes == ["length"]  # exactly one finish_reason
    assert chunks > 2
    # Usage rides on the chunk with finish_reason, unasked, equal to the engine's.
    assert usages[0] is not None
    assert usages[0].prompt_tokens == whole.usage.prompt_tokens
    assert usages[0].completion_tokens == whole.usage.completion_tokens == 16


def test_chat_stream_include_usage_chunk(client):
    stream = client.chat.completions.create(
        model=TINY_MODEL,
        messages=HELLO,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    last = events[-1]
    assert last.choices == [] and last.usage.completion_tokens == 5
    assert sum(1 for e in events for c in e.choices if c.finish_reason) == 1


def test_completions_non_stream_and_stream(client, tiny_tokenizer):
    prompt = "The quick brown fox"
    whole = client.completions.create(model=TINY_MODEL, prompt=prompt, max_tokens=10, temperature=0)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.prompt_tokens == len(tiny_tokenizer(prompt).input_ids)
    assert whole.usage.completion_tokens == 10
    parts, finishes, usage = [], [], None
    for event in client.completions.create(
        model=TINY_MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True
    ):
        assert event.object == "text_completion"
        c = event.choices[0]
        parts.append(c.text)
        if c.finish_reason:
            finishes.append(c.finish_reason)
            usage = event.usage
    assert "".join(parts) == whole.choices[0].text
    assert finishes == ["length"]
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == 10


def test_multi_turn_with_system_message(client, tiny_tokenizer):
    messages = [
        {"role": "system", "content": "Respond like a michelin starred chef."},
        {"role": "user", "content": "Name two ways to cook lamb."},
        {"role": "assistant", "content": "Sous vide, and roasting."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Tell me more "},
                {"type": "text", "text": "about the second."},
            ],
        },
    ]
    r = client.chat.completions.create(
        model=TINY_MODEL, messages=messages, max_tokens=4, temperature=0
    )
    flat = [
        dict(
            m,
            content=m["content"]
            if isinstance(m["content"], str)
            else "".join(p["text"] for p in m["content"]),
        )
        for m in messages
    ]
    ids = tiny_tokenizer.apply_chat_template(flat, tokenize=True, add_generation_prompt=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == 4


def test_models_list_and_get(client):
    ids = {m.id for m in client.models.list().data}
    assert {TINY_MODEL, f"{TINY_MODEL}:1", "deploy_id:tiny-llama-v1"} <= ids
    m = client.models.retrieve(f"{TINY_MODEL}:1")
    assert m.id == f"{TINY_MODEL}:1" and m.object == "model"
    assert m.model_extra["deploy_id"] == "tiny-llama-v1"
    assert m.model_extra["status"] == "RUNNING"


def test_health_needs_no_model(openai_stack):
    import httpx

    r = httpx.get(openai_stack.replace("/v1/openai", "/health"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_unknown_model_is_openai_404(client, openai_stack):
    import httpx

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no/such-model", messages=HELLO)
    assert info.value.status_code == 404
    r = httpx.post(
        f"{openai_stack}/chat/completions", json={"model": "no/such-model", "messages": HELLO}
    )
    err = r.json()["error"]
    assert r.status_code == 404
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "model_not_found" and "no/such-model" in err["message"]


def test_request_id_is_returned(openai_stack):
    import httpx

    r = httpx.get(f"{openai_stack}/models", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert httpx.get(f"{openai_stack}/models").headers["x-request-id"]


def test_fast_streams_under_load_are_coalesced_and_lose_nothing(client):
    """The fixture model makes a token every few ms, faster than the default
    stream_interval_ms (50). With at least stream_hold_min_streams (4) streams on the
    replica, tokens made while a chunk travels come together in the next one, so
    there are fewer chunks than tokens, and each stream's text and token count are
    those of the non-streamed answer."""
    prompt = "Count the stones by the river"
    whole = client.completions.create(
        model=TINY_MODEL,
        prompt=prompt,
        max_tokens=300,
        temperature=0,
        extra_body={"ignore_eos": True},
    )

    def stream() -> tuple[list[str], object]:
        texts, usage = [], None
        for event in client.completions.create(
            model=TINY_MODEL,
            prompt=prompt,
            max_tokens=300,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        ):
            if event.choices and event.choices[0].text:
                texts.append(event.choices[0].text)
            usage = event.usage or usage
        return texts, usage

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: stream(), range(6)))
    for texts, usage in results:
        assert "".join(texts) == whole.choices[0].text
        assert usage.completion_tokens == whole.usage.completion_tokens == 300
        assert 1 < len(texts) < 300
