"""Tool calling: which schema forces a call, and how generated text becomes calls.

Three modes (OpenAI's `tool_choice`):
  * "none" (or no tools): plain text; the tools are not even shown to the model.
  * "auto": the model decides, in its own tool-call format; a per-model parser
    (vLLM's, named by `tool_call_parser` in the config) finds the calls. A model
    with no parser configured answers in plain text.
  * "required" or a named function: guided decoding against a JSON schema built
    from the tools' parameter schemas, so even a model that would never call a tool
    produces a valid call. Same approach as vLLM's own server.
Pure functions, no engine imports (unit-tested).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from deployments.contract import ToolCall
from deployments.errors import InvalidInput


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def forced_function(tool_choice: Any) -> str | None:
    """The function name when tool_choice names one, else None."""
    if isinstance(tool_choice, dict):
        return (tool_choice.get("function") or {}).get("name")
    return None


def is_forced(tools: list[dict[str, Any]] | None, tool_choice: Any) -> bool:
    return bool(tools) and (tool_choice == "required" or forced_function(tool_choice) is not None)


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params = (tool.get("function") or {}).get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object"}


def forced_schema(
    tools: list[dict[str, Any]], tool_choice: Any, parallel: bool = True
) -> dict[str, Any]:
    """The JSON schema guided decoding must follow for a forced call.

    A named function: its arguments object. "required": a non-empty list of
    {"name": <one of the tools>, "parameters": <its arguments>}.
    """
    name = forced_function(tool_choice)
    if name is not None:
        for tool in tools:
            if (tool.get("function") or {}).get("name") == name:
                return _parameters(tool)
        raise InvalidInput(
            f"tool_choice names '{name}', which is not among the tools; "
            "name one of them, or send 'auto' or 'required'.",
            parameter="tool_choice",
        )
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t["function"]["name"]}, "parameters": _parameters(t)},
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": variants}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def calls_from_forced_output(text: str, tool_choice: Any) -> list[ToolCall] | None:
    """Generated text (valid against forced_schema) → calls; None if the text is
    not complete JSON (e.g. generation hit max_tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    name = forced_function(tool_choice)
    if name is not None:
        return [ToolCall(new_call_id(), name, json.dumps(value, ensure_ascii=False))]
    if not isinstance(value, list):
        return None
    return [
        ToolCall(
            new_call_id(), item["name"], json.dumps(item.get("parameters", {}), ensure_ascii=False)
        )
        for item in value
        if isinstance(item, dict) and "name" in item
    ]
