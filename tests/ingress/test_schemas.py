"""JSON-schema budgets, then validity: each refusal is a 400 whose param points at the
keyword past its budget."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.errors import OpenAIError
from ingress.schemas import SchemaBudget, check_schemas

BUDGET = SchemaBudget()
P = "response_format.json_schema.schema"


def _refused(schema: Any, budget: SchemaBudget = BUDGET, **more: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        check_schemas(budget, [(P, schema), *more.items()])
    err = caught.value
    assert (err.status, err.code) == (400, "invalid_value")
    return err


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"a": node}}
    return node


def test_an_ordinary_schema_passes():
    check_schemas(
        BUDGET,
        [
            (
                P,
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Z][a-z]+$", "maxLength": 64},
                        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 10},
                        "kind": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
            )
        ],
    )


def test_depth():
    check_schemas(BUDGET, [(P, _nested(15))])
    err = _refused(_nested(16))
    assert "deeper than 16" in err.message
    assert err.param == P + ".properties.a" * 16


def test_node_count_stops_early_on_a_huge_schema():
    err = _refused({"type": "object", "properties": {f"p{i}": {} for i in range(100_000)}})
    assert err.param == P and "2000 values" in err.message


def test_deep_data_is_counted_without_recursion():
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert "values" in _refused({"const": deep}).message


@pytest.mark.parametrize(
    "key", ["minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxContains"]
)
def test_size_bounds(key):
    err = _refused({"type": "array", "items": {key: 10**9}})
    assert err.param == f"{P}.items.{key}" and "10000" in err.message
    check_schemas(BUDGET, [(P, {key: 10_000})])


def test_alternatives_width():
    err = _refused({"oneOf": [{"const": i} for i in range(65)]})
    assert err.param == f"{P}.oneOf" and "65 subschemas" in err.message


def test_enum_values_count_across_schemas():
    budget = SchemaBudget(max_enum_values=5)
    err = _refused(
        {"enum": [1, 2, 3]}, budget, **{"tools.0.function.parameters": {"enum": [4, 5, 6]}}
    )
    assert err.param == "tools.0.function.parameters.enum"


def test_patterns_are_found_in_every_subschema_position():
    refused = {"type": "string", "pattern": "(a+)+"}
    for schema, where in [
        ({"properties": {"x": refused}}, ".properties.x.pattern"),
        ({"items": [refused]}, ".items.0.pattern"),
        ({"prefixItems": [refused]}, ".prefixItems.0.pattern"),
        ({"$defs": {"d": refused}}, ".$defs.d.pattern"),
        ({"additionalProperties": refused}, ".additionalProperties.pattern"),
        ({"not": {"anyOf": [refused]}}, ".not.anyOf.0.pattern"),
        ({"patternProperties": {"(a+)+": {}}}, ".patternProperties"),
    ]:
        assert _refused(schema).param == P + where


def test_a_property_named_pattern_is_not_a_pattern():
    check_schemas(BUDGET, [(P, {"properties": {"pattern": {"type": "string"}}})])


def test_pattern_budgets_are_totals():
    budget = SchemaBudget(max_pattern_size=2500)
    one = {"type": "string", "pattern": "^[a-z]{1,1000}$"}
    check_schemas(budget, [(P, {"properties": {"a": one, "b": one}})])
    err = _refused({"properties": {"a": one, "b": one, "c": one}}, budget)
    assert err.param == f"{P}.properties.c.pattern" and "2500" in err.message
    err = _refused({"pattern": "a" * 11}, SchemaBudget(max_pattern_chars=10))
    assert "10 characters" in err.message


def test_a_refused_pattern_says_why():
    err = _refused({"pattern": "[a-z]{1,20000}"})
    assert err.message.startswith("The pattern repeats {1,20000} times")


def test_invalid_schemas_name_their_field():
    err = _refused({"type": "object"}, **{"tools.2.function.parameters": {"type": 5}})
    assert err.param == "tools.2.function.parameters"
    assert _refused({"pattern": "(a"}).message.startswith(f"Invalid JSON schema in {P}")
