"""The server's caps on `n` and `max_tokens`, shared by chat and completions: a 400 naming the field before any model is called."""

import pytest

from deployments.contract import ChoiceDelta, GenerationResult
from ingress.config import IngressConfig
from ingress.endpoints.generate import check_caps, usage
from ingress.errors import OpenAIError
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.completions import CompletionRequest
from tests.ingress.fakes import API, error_of, standard_stack

MESSAGES = [{"role": "user", "content": "hi"}]


def _caps(**fields: object) -> None:
    config = IngressConfig.model_validate({"max_n": 4, "max_tokens_cap": 100})
    return check_caps(
        config, ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **fields})
    )


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"n": 5}, "n"),
        ({"max_tokens": 101}, "max_tokens"),
        ({"max_completion_tokens": 101}, "max_completion_tokens"),
    ],
)
def test_over_a_cap_is_400_naming_the_field(fields, param):
    with pytest.raises(OpenAIError) as caught:
        _caps(**fields)
    err = caught.value
    assert (err.status, err.param, err.code) == (400, param, "invalid_value")


def test_at_the_caps_passes():
    assert _caps(n=4, max_tokens=100, max_completion_tokens=100) is None


def test_no_token_cap_by_default():
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": 10**9})
    assert check_caps(IngressConfig(), request) is None


def test_usage_totals():
    result = GenerationResult(
        choices=[ChoiceDelta(index=0, text="x")], prompt_tokens=3, completion_tokens=4
    )
    assert usage(result).model_dump() == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/chat/completions", {"model": "org/llm", "messages": MESSAGES, "n": 3}, "n"),
        (
            "/chat/completions",
            {"model": "org/llm", "messages": MESSAGES, "max_tokens": 51},
            "max_tokens",
        ),
        ("/completions", {"model": "org/llm", "prompt": "x", "n": 3}, "n"),
        (
            "/completions",
            {"model": "org/llm", "prompt": "x", "max_tokens": 51, "stream": True},
            "max_tokens",
        ),
    ],
)
async def test_caps_through_the_app(path, body, param):
    stack = standard_stack(config={"max_n": 2, "max_tokens_cap": 50})
    async with stack.client() as client:
        response = await client.post(f"{API}{path}", json=body)
    assert error_of(response, 400)["param"] == param
    assert stack.serve.apps["llm-1"].calls == []
