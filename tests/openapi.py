"""Validators for our responses against the official OpenAI OpenAPI document
(tests/data/openai-openapi/openapi.yaml: its source, commit and sha256 in the README there)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

SPEC = Path(__file__).resolve().parent / "data" / "openai-openapi" / "openapi.yaml"


@functools.lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    import yaml

    return yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validate(schema_name: str, instance: Any) -> None:
    """Raises jsonschema.ValidationError unless `instance` fits
    `#/components/schemas/<schema_name>` (refs resolved within the document)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    Draft202012Validator(schema, registry=registry).validate(instance)


@functools.lru_cache(maxsize=1)
def _event_schemas() -> dict[str, str]:
    """Each Responses stream event type → its schema's name (from ResponseStreamEvent)."""
    schemas = _spec()["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        for kind in schemas[name]["properties"]["type"].get("enum", []):
            out[kind] = name
    return out


def validate_event(event: dict[str, Any]) -> None:
    """A Responses stream event against the schema of its own `type` (and so against
    ResponseStreamEvent), with that schema's error rather than anyOf's summary."""
    validate(_event_schemas()[event["type"]], event)
