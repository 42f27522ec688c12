"""The Responses API's own logic, pure: its request → a chat request, and the
engine's answer → OpenAI's Response object and stream events.

A Responses request runs on the chat pipeline (ingress/endpoints/responses.py):

    CreateResponseRequest + earlier turns ──to_chat──▶ ChatCompletionRequest
      → the chat path's checks, convert.chat_request, the one Forwarder
    GenerationResult ──Shaper.response──▶ Response object
    GenerationChunk… ──ResponseEvents──▶ response.created … response.completed

Items are kept as OpenAI's item objects (dicts with ids), the form they are listed in
(`input_items`) and stored in (ingress/store.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from deployments.contract import ChoiceDelta, GenerationChunk, GenerationResult, ToolCall
from ingress.errors import OpenAIError, from_validation_error
from ingress.wire.common import new_id
from ingress.wire.responses import (
    ITEM_TYPES,
    UNSUPPORTED_FIELDS,
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputItem,
    MessageItem,
    NamedFunctionChoice,
)

_TEXT_ONLY = ("input_image", "input_file", "input_audio")


def _id(prefix: str) -> str:
    return f"{prefix}_{new_id('x')[2:]}"


def unsupported(message: str, param: str) -> OpenAIError:
    return OpenAIError(message, 400, param=param, code="unsupported_parameter")


# --- request ------------------------------------------------------------------------


def check_supported(req: CreateResponseRequest) -> None:
    """400 naming the first field set to something this server does not do."""
    name = req.unsupported_field()
    if name is not None:
        raise unsupported(f"'{name}' is not supported: {UNSUPPORTED_FIELDS[name]}.", name)
    if req.text is not None and req.text.verbosity is not None:
        raise unsupported("'text.verbosity' is not supported.", "text.verbosity")


def parse_items(raw: str | list[dict[str, Any]], param: str = "input") -> list[InputItem]:
    """`input` (a string, or item objects) as typed items, each checked on its own
    so that an error names its place (`input.2.call_id`)."""
    if isinstance(raw, str):
        return [MessageItem(role="user", content=raw)]
    items: list[InputItem] = []
    for i, data in enumerate(raw):
        kind = data.get("type", "message")
        model = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise unsupported(
                f"Input items of type {kind!r} are not supported; send message, "
                "function_call or function_call_output items.",
                f"{param}.{i}.type",
            )
        content = data.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") in _TEXT_ONLY:
                raise unsupported(
                    f"'{part['type']}' content is not supported: the served models take text.",
                    f"{param}.{i}.content.{j}.type",
                )
        try:
            items.append(model.model_validate(data))  # type: ignore[arg-type]
        except ValidationError as exc:
            raise from_validation_error(exc, f"{param}.{i}") from None
    return items


def parse_tools(raw: list[dict[str, Any]] | None) -> list[FunctionTool]:
    tools = []
    for i, data in enumerate(raw or []):
        if data.get("type") != "function":
            raise unsupported(
                f"Tools of type {data.get('type')!r} are not supported; only 'function' "
                "tools (built-in tools such as web search are not served).",
                f"tools.{i}.type",
            )
        try:
            tools.append(FunctionTool.model_validate(data))
        except ValidationError as exc:
            raise from_validation_error(exc, f"tools.{i}") from None
    return tools


def item_resource(item: InputItem) -> dict[str, Any]:
    """An input item as OpenAI lists it: with an id and status, text in parts."""
    if isinstance(item, MessageItem):
        if item.role == "assistant":
            return message_item(item.id or _id("msg"), item.text(), item.status or "completed")
        return {
            "id": item.id or _id("msg"),
            "type": "message",
            "role": item.role,
            "status": item.status or "completed",
            "content": [{"type": "input_text", "text": item.text()}],
        }
    if isinstance(item, FunctionCallItem):
        return {
            "id": item.id or _id("fc"),
            "type": "function_call",
            "status": item.status or "completed",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    return {
        "id": item.id or _id("fco"),
        "type": "function_call_output",
        "status": item.status or "completed",
        "call_id": item.call_id,
        "output": item.text(),
    }


def chat_messages(items: list[InputItem], instructions: str | None) -> list[dict[str, Any]]:
    """Items → chat messages: a function_call joins the assistant turn before it (as
    chat templates expect), its output becomes a `tool` message."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            assert isinstance(item, FunctionCallOutputItem)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return messages


def to_chat(
    req: CreateResponseRequest, items: list[InputItem], tools: list[FunctionTool]
) -> dict[str, Any]:
    """The chat completions request that does what `req` asks (as a JSON object, to
    be parsed by the chat wire type: the same checks as a chat request)."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": chat_messages(items, req.instructions),
        "stream": req.stream,
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.user,
        "parallel_tool_calls": req.parallel_tool_calls,
        "top_k": req.top_k,
        "seed": req.seed,
        "ignore_eos": req.ignore_eos or None,
    }
    if tools:
        body["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in tools
        ]
    choice = req.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        body["tool_choice"] = choice
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type == "json_schema":
        spec = fmt.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt is not None:
        body["response_format"] = {"type": fmt.type}
    return {k: v for k, v in body.items() if v is not None}


def chat_param(param: str | None) -> str | None:
    """A chat request's field name → the Responses field it came from."""
    if param is None:
        return None
    if param.startswith("messages"):
        return "input"
    if param in ("max_tokens", "max_completion_tokens"):
        return "max_output_tokens"
    if param.startswith("response_format"):
        return "text.format"
    parts = param.split(".")
    if len(parts) >= 3 and parts[0] == "tools" and parts[2] == "function":
        return ".".join(parts[:2] + parts[3:])
    return param


# --- response -----------------------------------------------------------------------


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str, call: ToolCall, status: str = "completed", arguments: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    # Prefix-cache hits per request are not reported by the engine path: 0.
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


@dataclass(slots=True)
class Shaper:
    """Builds Response objects for one request: what it echoes back is fixed here."""

    req: CreateResponseRequest
    tools: list[FunctionTool]
    response_id: str = field(default_factory=lambda: _id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        error: OpenAIError | None = None,
    ) -> dict[str, Any]:
        req = self.req
        choice = req.tool_choice
        fmt = req.text.format if req.text and req.text.format else None
        body = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "background": False,
            "error": ({"code": error.response_code(), "message": error.message} if error else None),
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": req.store,
            "temperature": req.temperature,
            "text": {
                "format": (
                    fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
                )
            },
            "tool_choice": (
                choice.model_dump() if isinstance(choice, BaseModel) else (choice or "auto")
            ),
            "tools": [
                {**t.model_dump(exclude_none=True), "parameters": t.parameters, "strict": t.strict}
                for t in self.tools
            ],
            "top_p": req.top_p,
            "truncation": "disabled",
            "metadata": req.metadata or {},
        }
        # Present as their type or absent, never null (OpenAI's schema).
        if usage is not None:
            body["usage"] = usage
        if req.user is not None:
            body["user"] = req.user
        return body

    def from_result(self, result: GenerationResult) -> dict[str, Any]:
        """The whole (non-streamed) Response."""
        choice = result.choices[0]
        status = _status(choice.finish_reason)
        output = []
        if choice.text or not choice.tool_calls:
            output.append(message_item(_id("msg"), choice.text, status))
        output += [function_call_item(_id("fc"), c) for c in choice.tool_calls or []]
        return self.response(status, output, usage(result.prompt_tokens, result.completion_tokens))


class ResponseEvents:
    """Pure and stateful per stream: GenerationChunks in, typed SSE events out, each
    with the next `sequence_number`; `done()` gives the last events and the final
    Response (stored by the endpoint)."""

    def __init__(self, shaper: Shaper) -> None:
        self.shaper = shaper
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._message_id: str | None = None
        self._text: list[str] = []
        self._finish: str | None = None
        self._calls: list[ToolCall] = []
        self._tokens = (0, 0)

    def _event(self, kind: str, **fields: Any) -> str:
        body = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"

    def start(self) -> str:
        snapshot = self.shaper.response("in_progress", [])
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    def _open_message(self) -> str:
        self._message_id = _id("msg")
        item = message_item(self._message_id, "", "in_progress")
        item["content"] = []
        return self._event(
            "response.output_item.added", output_index=len(self.output), item=item
        ) + self._event(
            "response.content_part.added",
            item_id=self._message_id,
            output_index=len(self.output),
            content_index=0,
            part=output_text(""),
        )

    def chunk(self, chunk: GenerationChunk) -> str:
        """The events of one chunk; the first chunk's begin with created, in_progress."""
        self._tokens = (chunk.prompt_tokens, chunk.completion_tokens)
        out = [self.start()] if self.seq == 0 else []
        for d in chunk.deltas:
            if d.index != 0:  # the Responses API has one answer (n is 1)
                continue
            out.append(self._delta(d))
        return "".join(out)

    def _delta(self, d: ChoiceDelta) -> str:
        out = ""
        if d.text:
            if self._message_id is None:
                out += self._open_message()
            self._text.append(d.text)
            out += self._event(
                "response.output_text.delta",
                item_id=self._message_id,
                output_index=len(self.output),
                content_index=0,
                delta=d.text,
                logprobs=[],
            )
        if d.tool_calls:
            self._calls += d.tool_calls
        if d.finish_reason is not None:
            self._finish = d.finish_reason
        return out

    def done(self) -> tuple[str, dict[str, Any]]:
        """The closing events (items done, then response.completed or .incomplete)
        and the final Response."""
        status = _status(self._finish)
        out = []
        if self._message_id is None and not self._calls:
            out.append(self._open_message())
        if self._message_id is not None:
            text, index = "".join(self._text), len(self.output)
            item = message_item(self._message_id, text, status)
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=self._message_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
                + self._event(
                    "response.content_part.done",
                    item_id=self._message_id,
                    output_index=index,
                    content_index=0,
                    part=output_text(text),
                )
                + self._event("response.output_item.done", output_index=index, item=item)
            )
            self.output.append(item)
        for call in self._calls:
            out.append(self._call_events(call))
        final = self.shaper.response(status, self.output, usage(*self._tokens))
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=final))
        return "".join(out), final

    def _call_events(self, call: ToolCall) -> str:
        item_id, index = _id("fc"), len(self.output)
        item = function_call_item(item_id, call)
        self.output.append(item)
        return (
            self._event(
                "response.output_item.added",
                output_index=index,
                item=function_call_item(item_id, call, "in_progress", arguments=""),
            )
            + self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=call.arguments,
            )
            + self._event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=call.name,
                arguments=call.arguments,
            )
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def failed(self, error: OpenAIError) -> str:
        """An error after the stream started: an `error` event, then response.failed."""
        return self._event(
            "error", code=error.code, message=error.message, param=error.param
        ) + self._event(
            "response.failed", response=self.shaper.response("failed", self.output, error=error)
        )
