"""POST /embeddings through the real app: float and base64 encodings of the replica's float32 bytes, and the request it gets."""

import base64
import struct

import pytest

from deployments.contract import EmbeddingResult, EmbedRequest, ErrorInfo
from tests.ingress.fakes import (
    API,
    FakeApplication,
    app_details,
    error_of,
    make_stack,
    standard_stack,
    vector_bytes,
)

pytestmark = pytest.mark.anyio

URL = f"{API}/embeddings"


async def test_float_encoding():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/emb", "input": ["a", "b"]})
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "model": "org/emb",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.0, 0.5]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.5]},
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }


async def test_base64_encoding_is_the_little_endian_float32_bytes():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(
            URL, json={"model": "org/emb", "input": ["a", "b"], "encoding_format": "base64"}
        )
    data = response.json()["data"]
    assert [base64.b64decode(d["embedding"]) for d in data] == [
        vector_bytes(0, 0.5),
        vector_bytes(1, 0.5),
    ]
    assert struct.unpack("<2f", base64.b64decode(data[1]["embedding"])) == (1.0, 0.5)


async def test_the_deployment_gets_the_inputs_as_a_list():
    stack = standard_stack()
    async with stack.client({"x-request-id": "emb-req"}) as client:
        await client.post(
            URL,
            json={
                "model": "org/emb",
                "input": "one",
                "dimensions": 2,
                "truncate_prompt_tokens": -1,
            },
        )
        await client.post(URL, json={"model": "org/emb", "input": [5, 6]})
    first, second = (c.payload for c in stack.serve.apps["emb-1"].calls)
    assert isinstance(first, EmbedRequest) and first.request_id.startswith("emb-req-")
    assert (first.inputs, first.dimensions, first.truncate_prompt_tokens) == (["one"], 2, -1)
    assert second.inputs == [[5, 6]]


async def test_many_vectors_are_built_off_the_loop_and_in_order():
    stack = standard_stack()
    inputs = [f"text {i}" for i in range(100)]
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/emb", "input": inputs})
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(100))
    assert [d["embedding"][0] for d in data] == [float(i) for i in range(100)]


async def test_invalid_input_is_400_naming_input():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/emb", "input": ""})
    error = error_of(response, 400)
    assert error["param"] == "input"
    assert stack.serve.apps["emb-1"].calls == []


async def test_deployment_error_is_its_status():
    info = ErrorInfo("dimensions must be at most 384", kind="invalid_request", param="dimensions")
    stack = make_stack(
        {"emb-1": app_details("org/emb", tasks=("embeddings",))},
        {"emb-1": FakeApplication(unary={"embed": lambda _: info})},
    )
    async with stack.client() as client:
        response = await client.post(
            URL, json={"model": "org/emb", "input": "x", "dimensions": 1000}
        )
    assert error_of(response, 400)["param"] == "dimensions"


async def test_chat_model_cannot_embed():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/llm", "input": "x"})
    assert error_of(response, 400)["code"] == "model_task_mismatch"


async def test_result_type_is_what_the_contract_says():
    result = EmbeddingResult(vectors=[vector_bytes(0.25)], prompt_tokens=1)
    stack = make_stack(
        {"emb-1": app_details("org/emb", tasks=("embeddings",))},
        {"emb-1": FakeApplication(unary={"embed": lambda _: result})},
    )
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/emb", "input": "x"})
    assert response.json()["data"][0]["embedding"] == [0.25]
