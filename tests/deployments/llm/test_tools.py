"""Forced tool calls: the schema guided decoding follows, and output → calls."""

import json

import jsonschema
import pytest

from deployments.llm.tools import calls_from_forced_output, forced_schema, is_forced

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "a",
            "parameters": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "required": ["x"],
            },
        },
    },
    {"type": "function", "function": {"name": "b"}},
]


def test_modes():
    assert not is_forced(None, "required")
    assert not is_forced(TOOLS, "auto") and not is_forced(TOOLS, "none")
    assert is_forced(TOOLS, "required")
    assert is_forced(TOOLS, {"type": "function", "function": {"name": "a"}})


def test_named_schema_is_the_parameters():
    assert (
        forced_schema(TOOLS, {"type": "function", "function": {"name": "a"}})
        == TOOLS[0]["function"]["parameters"]
    )
    assert forced_schema(TOOLS, {"type": "function", "function": {"name": "b"}}) == {
        "type": "object"
    }
    with pytest.raises(ValueError):
        forced_schema(TOOLS, {"type": "function", "function": {"name": "zzz"}})


def test_required_schema_accepts_calls_and_rejects_others():
    schema = forced_schema(TOOLS, "required", parallel=False)
    jsonschema.validate([{"name": "a", "parameters": {"x": 1}}], schema)
    for bad in (
        [],
        [{"name": "c", "parameters": {}}],
        [{"name": "a", "parameters": {}}],
        [{"name": "b", "parameters": {}}, {"name": "b", "parameters": {}}],
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_output_to_calls():
    calls = calls_from_forced_output('[{"name":"a","parameters":{"x":2}}]', "required")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("a", {"x": 2})]
    assert calls[0].id.startswith("call_")
    named = calls_from_forced_output('{"x":3}', {"type": "function", "function": {"name": "a"}})
    assert named[0].name == "a" and json.loads(named[0].arguments) == {"x": 3}
    assert calls_from_forced_output('{"x":', "required") is None
