"""Every integer a chat, completions or embeddings request carries has an upper bound,
so an out-of-range one (vLLM and torch fail on `10**30` with a 500) is a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.errors import OpenAIError
from ingress.http import parse
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.common import MAX_INT32
from ingress.wire.completions import CompletionRequest
from ingress.wire.embeddings import EmbeddingRequest
from ingress.wire.images import ImageGenerationRequest

HUGE = 10**30
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CMPL = {"model": "m", "prompt": "hi"}


def _param(wire: Any, body: dict[str, Any]) -> str | None:
    with pytest.raises(OpenAIError) as caught:
        parse(wire, body)
    assert caught.value.status == 400
    return caught.value.param


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", HUGE),
        ("top_k", HUGE),
        ("n", HUGE),
        ("max_tokens", HUGE),
        ("max_completion_tokens", HUGE),
        ("top_logprobs", HUGE),
        ("stop_token_ids", [1, HUGE]),
        ("stop_token_ids", [-1]),
    ],
)
def test_chat_integers_are_bounded(field, value):
    param = _param(ChatCompletionRequest, {**CHAT, "logprobs": True, field: value})
    assert param is not None and param.split(".")[0] == field


@pytest.mark.parametrize(
    "field, value",
    [
        ("logprobs", HUGE),
        ("prompt", [1, HUGE]),
        ("prompt", [[1], [MAX_INT32 + 1]]),
        ("prompt", [[-1]]),
    ],
)
def test_completion_integers_are_bounded(field, value):
    assert _param(CompletionRequest, {**CMPL, field: value}) == field


def test_the_largest_int32_passes():
    parse(CompletionRequest, {**CMPL, "prompt": [MAX_INT32], "top_k": MAX_INT32})


@pytest.mark.parametrize(
    "field, value",
    [
        ("dimensions", HUGE),
        ("truncate_prompt_tokens", HUGE),
        ("input", [1, HUGE]),
        ("input", [[1], [HUGE]]),
    ],
)
def test_embedding_integers_are_bounded(field, value):
    assert _param(EmbeddingRequest, {"model": "m", "input": "x", field: value}) == field


def test_image_steps_are_bounded():
    body = {"prompt": "x", "num_inference_steps": HUGE}
    assert _param(ImageGenerationRequest, body) == "num_inference_steps"


def test_stop_counts_are_bounds_not_syntax():
    # How many stop strings, and how long, is a configured bound (ingress/bounds.py).
    assert parse(ChatCompletionRequest, {**CHAT, "stop": ["a"] * 5}).stop_list() == ["a"] * 5
    assert _param(ChatCompletionRequest, {**CHAT, "stop": ["a", ""]}) == "stop"
