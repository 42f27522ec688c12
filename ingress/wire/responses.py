"""The Responses API: CreateResponse, its input items, and the Response object.

Input items are parsed one by one (ingress/responses.py `parse_items`), so that a bad
item's error names its place (`input.2.call_id`); the request keeps them as raw objects.
Output is built as plain dicts in OpenAI's exact shape (ingress/responses.py): the same
dicts are returned, streamed inside events, and stored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ingress.wire.chat import FunctionDef
from ingress.wire.common import MAX_INT32, Metadata, WireModel
from ingress.wire.sampling import JsonSchemaSpec

# --- input items ---------------------------------------------------------------------


class TextContent(BaseModel):
    """A text part: `input_text` in user/system turns, `output_text` in an assistant
    turn sent back (annotations and logprobs allowed and ignored)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["input_text", "output_text"]
    text: str


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["message"] = "message"
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextContent]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function_call"]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function_call_output"]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[TextContent]

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(p.text for p in self.output)


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem
ITEM_TYPES: dict[str, type[BaseModel]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}

# --- the request -----------------------------------------------------------------------


class FunctionTool(FunctionDef):
    """A tool of type `function`: the chat API's function definition, flattened."""

    type: Literal["function"]


class NamedFunctionChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    name: str


class TextFormat(JsonSchemaSpec):
    """`text.format`: {"type": "text" | "json_object"} or a json_schema with its
    name, schema and strict flag inline (not nested as in chat)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)
    type: Literal["text", "json_object", "json_schema"]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: TextFormat | None = None
    verbosity: None = None  # "low" | "medium" | "high": not supported (a 400 names it)


# Fields of OpenAI's CreateResponse this server does not implement: a request that sets
# one to anything but its "off" value gets a 400 naming it, never a silent ignore.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "background": "background mode",
    "conversation": "conversations (use previous_response_id)",
    "prompt": "stored prompt templates",
    "reasoning": "reasoning settings (the served models have no reasoning mode)",
    "include": "extra output data (include)",
    "top_logprobs": "log probabilities in the Responses API (use chat completions)",
    "max_tool_calls": "max_tool_calls (it bounds built-in tools, which are not served)",
    "context_management": "context management",
}


class CreateResponseRequest(WireModel):
    model: str = Field(min_length=1)
    # A string, or a list of items (checked one by one: ingress/responses.py).
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=128)
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    metadata: Metadata | None = None
    user: str | None = Field(default=None, max_length=256)
    truncation: Literal["disabled"] | None = None  # "auto" is not supported
    service_tier: Literal["auto", "default"] | None = None
    # Hints that change nothing here: accepted.
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    stream_options: dict[str, Any] | None = None
    # --- Not part of the OpenAI spec: vLLM-style sampling extras, as in chat --------
    top_k: int | None = Field(default=None, ge=-1, le=MAX_INT32)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    ignore_eos: bool = False
    # Not supported: see UNSUPPORTED_FIELDS.
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    reasoning: Any = None
    include: Any = None
    top_logprobs: Any = None
    max_tool_calls: Any = None
    context_management: Any = None

    def unsupported_field(self) -> str | None:
        """The first field set to something this server does not do, or None."""
        for name in UNSUPPORTED_FIELDS:
            value = getattr(self, name)
            if value in (None, False, [], {}):
                continue
            off = isinstance(value, dict) and all(v is None for v in value.values())
            if name == "reasoning" and off:  # {"effort": null}: what clients send unset
                continue
            return name
        return None


class ListInputItemsQuery(BaseModel):
    """GET /responses/{id}/input_items's query."""

    model_config = ConfigDict(extra="ignore", strict=False)
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = Field(default=None, max_length=128)
