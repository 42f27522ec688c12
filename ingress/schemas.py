"""Budgets for the JSON schemas of one request (response_format and tool parameters),
then a check that each is a valid JSON Schema: a bad or costly schema is a 400 naming
the field, before it reaches the engine.

Guided decoding compiles a schema into a grammar inside the engine, and vLLM 0.32 puts
a deadline only on `regex` constraints (VLLM_REGEX_COMPILATION_TIMEOUT_S), not on JSON
schemas. It converts the schema with xgrammar inside `AsyncLLM.add_request`, on the
replica's event loop, then compiles it on the engine core's grammar threads with no
deadline; an abort frees the request, not the thread. A 300-byte schema whose pattern
counts to 20,000 held a replica for minutes. So the budgets here make such schemas
unrepresentable (ingress/regex_cost.py for patterns), and a grammar that still fails
ends its request with an error: vLLM finishes it with finish_reason "error", which the
replica reports as an error (deployments/llm/server.py).
"""

from __future__ import annotations

from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from ingress.errors import OpenAIError
from ingress.regex_cost import PatternRefused, pattern_size


class SchemaBudget(BaseModel):
    """Budgets for the JSON schemas of one request, all of them together, so that a
    grammar compiles in well under a second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_depth: int = Field(
        default=16,
        ge=1,
        description="Schema nesting: a subschema under properties, items, anyOf, ... "
        "is one level deeper.",
    )
    max_nodes: int = Field(
        default=2000,
        ge=1,
        description="JSON values (objects, arrays, scalars) in all of the request's "
        "schemas together.",
    )
    max_alternatives: int = Field(
        default=64, ge=1, description="Subschemas in one anyOf, oneOf or allOf."
    )
    max_enum_values: int = Field(
        default=1000, ge=0, description="enum values in all schemas together (OpenAI's limit)."
    )
    max_size_bound: int = Field(
        default=10_000,
        ge=0,
        description="Largest minLength, maxLength, minItems, maxItems, minProperties, "
        "maxProperties, minContains or maxContains.",
    )
    max_pattern_chars: int = Field(
        default=4000,
        ge=0,
        description="Characters of all `pattern`s and patternProperties keys together.",
    )
    max_pattern_repeat: int = Field(
        default=1000, ge=1, description="Largest count in a regex quantifier such as {n,m}."
    )
    max_pattern_size: int = Field(
        default=4000,
        ge=1,
        description="Size of all patterns together with counted quantifiers expanded "
        "(`[a-z]{1,1000}` is 1000, `(ab){2,5}` is 10, `a+` is 2).",
    )


def _refuse(param: str, message: str) -> OpenAIError:
    return OpenAIError(message, 400, param=param, code="invalid_value")


def check_schemas(budget: SchemaBudget, schemas: list[tuple[str, Any]]) -> None:
    """Checks the schemas of one request: first the budgets (cheap, and they stop
    early), then that each is a valid JSON Schema (draft 2020-12). Slow for large
    schemas (jsonschema's check of one at the node budget takes ~0.3 s): call it off
    the event loop.

    Args:
        budget: the budgets, shared by all the schemas.
        schemas: (param, schema) pairs; param names the field in errors.

    Raises:
        OpenAIError: 400 naming the field, down to the keyword past a budget.
    """
    tally = _Tally(budget)
    for param, schema in schemas:
        tally.check(param, schema)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    for param, schema in schemas:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise _refuse(param, f"Invalid JSON schema in {param}: {exc.message}") from None
        except RecursionError:
            raise _refuse(param, f"The JSON schema in {param} is nested too deeply.") from None


# Keywords whose value is one subschema, a map of them, or a list of them.
_SUBSCHEMA = (
    "items",
    "additionalItems",
    "contains",
    "additionalProperties",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf", "items")
_ALTERNATIVES = ("allOf", "anyOf", "oneOf")
_SIZE_BOUNDS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)


class _Tally:
    """Walks the schemas of one request, adding up what the budgets count."""

    def __init__(self, budget: SchemaBudget) -> None:
        self.budget = budget
        self.nodes = 0
        self.enum_values = 0
        self.pattern_chars = 0
        self.pattern_size = 0
        self.param = ""

    def check(self, param: str, schema: Any) -> None:
        self.param = param
        self._count_nodes(schema)
        self._schema(schema, param, 1)

    def _count_nodes(self, value: Any) -> None:
        """Counts every JSON value, iteratively (hostile nesting cannot exhaust the
        stack), and stops as soon as the budget is passed."""
        limit = self.budget.max_nodes
        stack = [value]
        while stack:
            item = stack.pop()
            self.nodes += 1
            if self.nodes > limit:
                raise _refuse(
                    self.param,
                    "The JSON schemas of this request (response_format and tool "
                    f"parameters) have more than {limit} values in all. Send smaller "
                    "schemas: fewer properties, shorter enums.",
                )
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)

    def _schema(self, node: Any, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            return  # a boolean schema, or not a schema (jsonschema's check says so)
        budget = self.budget
        if depth > budget.max_depth:
            raise _refuse(
                path,
                f"The JSON schema in {self.param} nests deeper than {budget.max_depth} "
                "levels. Flatten it.",
            )
        self._keywords(node, path)
        for key in _SUBSCHEMA:
            if isinstance(node.get(key), dict):
                self._schema(node[key], f"{path}.{key}", depth + 1)
        for key in _SUBSCHEMA_LISTS:
            if isinstance(node.get(key), list):
                for i, sub in enumerate(node[key]):
                    self._schema(sub, f"{path}.{key}.{i}", depth + 1)
        for key in _SUBSCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                for name, sub in node[key].items():
                    if key == "patternProperties":
                        self._pattern(name, f"{path}.{key}")
                    self._schema(sub, f"{path}.{key}.{name}", depth + 1)

    def _keywords(self, node: dict[str, Any], path: str) -> None:
        """The budgets one schema object's own keywords count against."""
        budget = self.budget
        for key in _SIZE_BOUNDS:
            value = node.get(key)
            if _is_number(value) and value > budget.max_size_bound:
                raise _refuse(
                    f"{path}.{key}",
                    f"{key} is {value}; at most {budget.max_size_bound} is allowed in a "
                    "schema (guided decoding compiles it into the grammar). Lower it.",
                )
        enum = node.get("enum")
        if isinstance(enum, list):
            self.enum_values += len(enum)
            if self.enum_values > budget.max_enum_values:
                raise _refuse(
                    f"{path}.enum",
                    "The JSON schemas of this request have more than "
                    f"{budget.max_enum_values} enum values in all. Shorten the enums.",
                )
        for key in _ALTERNATIVES:
            options = node.get(key)
            if isinstance(options, list) and len(options) > budget.max_alternatives:
                raise _refuse(
                    f"{path}.{key}",
                    f"{key} lists {len(options)} subschemas; at most "
                    f"{budget.max_alternatives} are allowed.",
                )
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            self._pattern(pattern, f"{path}.pattern")

    def _pattern(self, pattern: str, path: str) -> None:
        budget = self.budget
        self.pattern_chars += len(pattern)
        if self.pattern_chars > budget.max_pattern_chars:
            raise _refuse(
                path,
                f"The schemas' patterns have more than {budget.max_pattern_chars} "
                "characters in all. Shorten them.",
            )
        try:
            size = pattern_size(pattern, budget.max_pattern_repeat)
        except PatternRefused as exc:
            raise _refuse(path, f"The pattern {exc}.") from None
        self.pattern_size += size or 0
        if self.pattern_size > budget.max_pattern_size:
            raise _refuse(
                path,
                "The schemas' patterns are too complex: their size with counted "
                f"quantifiers expanded passes {budget.max_pattern_size} (`[a-z]{{1,1000}}` "
                "counts 1000). Use smaller counts, or maxLength without a pattern.",
            )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
