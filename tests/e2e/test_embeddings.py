"""Embeddings through real Serve + vLLM's pooling runner (all-MiniLM-L6-v2) + the
official openai SDK; raw HTTP only where the SDK hides the wire (error bodies)."""

from __future__ import annotations

import asyncio
import base64
import json
import math

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import TINY_MODEL
from tests.e2e.conftest import EMBEDDINGS_MODEL as MODEL

pytestmark = pytest.mark.e2e

SENTENCES = [
    "A cat sits on the mat.",
    "A kitten is playing with yarn.",
    "The stock market fell sharply today.",
]


@pytest.fixture(scope="module")
def minilm(minilm_app):
    """The session's MiniLM application (tests/e2e/conftest.py): its handle."""
    return minilm_app


@pytest.fixture(scope="module")
def reference():
    """Plain transformers: attention-masked mean of the last hidden state, L2-normalised
    (what sentence-transformers does for this model, max 256 tokens)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from deployments.models.sources import resolve_model_source

    path = str(resolve_model_source("package:all-minilm-l6-v2"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    embed.tokenizer = tokenizer
    return embed


def _vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float64)


def _post(base: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}/embeddings", json=body, timeout=120)


def test_sdk_default_is_base64_and_equals_float(minilm, openai_stack):
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(json.loads(r.content))]})
    client = openai.OpenAI(
        base_url=openai_stack, api_key="test", max_retries=0, timeout=120, http_client=http
    )
    default = client.embeddings.create(model=MODEL, input=SENTENCES)
    floats = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert sent[0]["encoding_format"] == "base64"  # the SDK's choice, decoded by it
    assert _vectors(default).tolist() == _vectors(floats).tolist()
    raw = _post(openai_stack, {"model": MODEL, "input": "hi", "encoding_format": "base64"})
    encoded = raw.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").shape == (384,)


def test_shape_order_norm_and_semantics(minilm, client):
    r = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert r.object == "list" and r.model == MODEL
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in r.data)
    v = _vectors(r)
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cat_kitten, cat_stocks = v[0] @ v[1], v[0] @ v[2]
    assert cat_kitten > cat_stocks + 0.3
    # A string alone gives the vector it gets inside a list (order preserved).
    single = client.embeddings.create(model=MODEL, input=SENTENCES[1], encoding_format="float")
    assert len(single.data) == 1
    assert np.allclose(_vectors(single)[0], v[1], atol=1e-6)


def test_matches_transformers_and_token_counts(minilm, client, reference):
    r = client.embeddings.create(model=MODEL, input=SENTENCES, encoding_format="float")
    assert np.abs(_vectors(r) - reference(SENTENCES)).max() < 1e-5
    counts = [len(ids) for ids in reference.tokenizer(SENTENCES)["input_ids"]]
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(counts)


def test_token_id_inputs(minilm, client, reference):
    text = client.embeddings.create(model=MODEL, input=SENTENCES[:2], encoding_format="float")
    ids = reference.tokenizer(SENTENCES[:2])["input_ids"]  # with [CLS] and [SEP]
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    both = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    assert np.allclose(_vectors(one)[0], _vectors(text)[0], atol=1e-6)
    assert np.allclose(_vectors(both), _vectors(text), atol=1e-6)
    assert both.usage.prompt_tokens == text.usage.prompt_tokens


def test_dimensions_truncate_and_renormalise(minilm, client):
    full = _vectors(
        client.embeddings.create(model=MODEL, input=SENTENCES[0], encoding_format="float")
    )[0]
    cut = _vectors(
        client.embeddings.create(
            model=MODEL, input=SENTENCES[0], encoding_format="float", dimensions=64
        )
    )[0]
    assert cut.shape == (64,)
    assert math.isclose(np.linalg.norm(cut), 1.0, abs_tol=1e-5)
    assert np.allclose(cut, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def _error(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"input": ""}, "input", "empty string"),
        ({"input": []}, "input", "empty list"),
        ({"input": ["ok", ""]}, "input", "input[1] is an empty string"),
        ({"input": [[101, 102], []]}, "input", "empty token list"),
        ({"input": ["x"] * 2049}, "input", "at most 2048"),
        ({"input": "x", "dimensions": 385}, "dimensions", "at most 384"),
        ({"input": "x", "dimensions": 0}, "dimensions", ""),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", ""),
        ({"input": [[101, 10**6, 102]]}, "input", "vocabulary"),
        ({"input": "x", "truncate_prompt_tokens": 257}, "truncate_prompt_tokens", "256"),
    ],
)
def test_limits_are_400(minilm, openai_stack, body, param, words):
    err = _error(_post(openai_stack, {"model": MODEL, **body}))
    assert err["param"] == param
    assert words in err["message"]


def test_too_long_is_400_unless_truncation_asked(minilm, openai_stack, client):
    long_text = "word " * 300  # 302 tokens with [CLS] and [SEP]
    err = _error(_post(openai_stack, {"model": MODEL, "input": ["short", long_text]}))
    assert err["param"] == "input" and err["code"] == "context_length_exceeded"
    assert "256" in err["message"] and "Input 1" in err["message"]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=long_text)
    r = client.embeddings.create(
        model=MODEL, input=long_text, extra_body={"truncate_prompt_tokens": -1}
    )
    assert r.usage.prompt_tokens == 256
    r = client.embeddings.create(
        model=MODEL, input=long_text, extra_body={"truncate_prompt_tokens": 10}
    )
    assert r.usage.prompt_tokens == 10


def test_task_mismatch_both_ways(minilm, openai_stack):
    err = _error(_post(openai_stack, {"model": TINY_MODEL, "input": "hi"}))
    assert err["code"] == "model_task_mismatch"
    r = httpx.post(
        f"{openai_stack}/chat/completions",
        timeout=60,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert _error(r)["code"] == "model_task_mismatch"


def test_concurrent_requests_share_engine_batches(minilm, openai_stack):
    before = minilm.stats.remote().result()["batch_sizes"]

    async def burst():
        # A client of its own: an AsyncOpenAI's connections belong to one event loop.
        async with openai.AsyncOpenAI(
            base_url=openai_stack, api_key="test", max_retries=0, timeout=120
        ) as client:
            return await asyncio.gather(
                *(
                    client.embeddings.create(model=MODEL, input=f"sentence {i} of the burst")
                    for i in range(32)
                )
            )

    results = asyncio.run(burst())
    assert all(len(r.data) == 1 for r in results)
    after = minilm.stats.remote().result()["batch_sizes"]
    new = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * n for size, n in new.items()) == 32  # every input in some step
    assert max(size for size, n in new.items() if n > 0) > 1  # ... sharing a step
