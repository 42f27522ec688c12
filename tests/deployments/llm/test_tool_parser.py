"""tool_choice "auto" reads the model's own format through vLLM's parser of that name."""

import pytest

# Its fixture imports vLLM: 13-18 s on the 2-core CI machine under load, so the module
# gets more than pyproject.toml's 60 s per test (which counts the fixture's setup).
pytestmark = pytest.mark.timeout(180)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}}},
        },
    }
]


@pytest.fixture(scope="module")
def hermes(tmp_path_factory):
    from transformers import AutoTokenizer

    from deployments.llm.vllm_engine import ToolCallParser
    from deployments.models.tiny_llama import build_tiny_llama

    path = build_tiny_llama(tmp_path_factory.mktemp("m") / "tiny")
    return ToolCallParser("hermes", AutoTokenizer.from_pretrained(str(path)))


def test_calls_in_the_models_format_become_tool_calls(hermes):
    text = 'Sure. <tool_call>{"name": "get_time", "arguments": {"utc": true}}</tool_call>'
    content, calls = hermes.extract(text, TOOLS)
    assert content.strip() == "Sure."
    assert [(c.name, c.arguments) for c in calls] == [("get_time", '{"utc": true}')]


def test_plain_text_stays_text(hermes):
    assert hermes.extract("no tools needed", TOOLS) == ("no tools needed", [])
