"""Embeddings wire types (syntax checks, encodings) and the replica's model-dependent
checks, on a typed fake engine: no Ray, no vLLM."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from ingress.errors import OpenAIError
from ingress.http import parse
from ingress.wire.embeddings import EmbeddingRequest, embedding_response, encode_vector


def _req(**body) -> EmbeddingRequest:
    return parse(EmbeddingRequest, {"model": "m", **body})


@pytest.mark.parametrize(
    "value, expected",
    [
        ("hi", ["hi"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
    ],
)
def test_input_forms_become_lists(value, expected):
    assert _req(input=value).inputs() == expected


@pytest.mark.parametrize(
    "body, words",
    [
        ({"input": ""}, "empty string"),
        ({"input": []}, "empty list"),
        ({"input": ["a", ""]}, "input[1] is an empty string"),
        ({"input": [[1], []]}, "input[1] is an empty token list"),
        ({"input": ["a"] * 2049}, "at most 2048"),
        ({"input": "a", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ],
)
def test_syntax_limits_are_400s_naming_the_field(body, words):
    with pytest.raises(OpenAIError) as info:
        _req(**body)
    assert info.value.status == 400 and words in info.value.message
    assert info.value.param in {"input", "truncate_prompt_tokens"}


def test_2048_inputs_are_allowed_and_defaults():
    req = _req(input=["a"] * 2048)
    assert req.encoding_format == "float" and req.dimensions is None
    assert req.truncate_prompt_tokens is None


def test_encodings_agree_and_base64_is_little_endian_float32():
    values = np.array([0.1, -2.5, 3e-8], dtype="<f4")
    raw = values.tobytes()
    assert encode_vector(raw, "float") == [float(x) for x in values]
    decoded = np.frombuffer(base64.b64decode(encode_vector(raw, "base64")), dtype="<f4")
    assert decoded.tolist() == values.tolist()


def test_response_shape():
    raw = np.ones(3, dtype="<f4").tobytes()
    body = json.loads(embedding_response("m", [raw, raw], 7, "float").model_dump_json())
    assert body["object"] == "list" and body["model"] == "m"
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert body["data"][0]["embedding"] == [1.0, 1.0, 1.0]
