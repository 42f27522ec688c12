"""Bounds on the work one chat or completions request may ask for, checked in the
ingress before any model is called. A request past a bound is a 400 naming the field
in `param`, with a message that gives the bound and what to send instead.

Only what needs no model knowledge is checked here: stop sequences, message count,
prompt characters, tools, sequences (prompts × n), the logprob volume when max_tokens
is known, and the JSON schemas of response_format and tool parameters (their budgets
and validity: ingress/schemas.py). What depends on the model (prompt tokens, max_tokens
against the context, ignore_eos, the logprob volume under the default max_tokens) is
checked by the LLM replica, which has the tokenizer (deployments/llm/plan.py, `limits`
in deployments/llm/config.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingress.errors import OpenAIError
from ingress.schemas import SchemaBudget, check_schemas
from ingress.wire.chat import ChatCompletionRequest, ChatMessage
from ingress.wire.completions import CompletionRequest
from ingress.wire.sampling import SamplingFields


class RequestBounds(BaseModel):
    """What one chat or completions request may ask for; past a bound, a 400 naming
    the field. The model's own limits (deployments/llm/config.py) apply as well."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sequences_per_request: int = Field(
        default=64,
        ge=1,
        description="Sequences one request generates: prompts × n for completions, n "
        "for chat. A model's `limits.max_sequences_per_request` may set a lower one.",
    )
    max_stop_sequences: int = Field(
        default=4, ge=0, description="Strings in `stop` (OpenAI's own limit)."
    )
    max_stop_chars: int = Field(default=256, ge=1, description="Characters of one stop string.")
    max_messages: int = Field(default=2048, ge=1, description="Chat messages per request.")
    max_prompt_chars: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Characters of a chat's message content (text parts and tool-call "
        "arguments) or of a completion's text prompts, together; checked before any "
        "template is rendered or text tokenised.",
    )
    max_tools: int = Field(default=128, ge=0, description="Tools per chat request (OpenAI's).")
    max_logprob_entries: int = Field(
        default=500_000,
        ge=1,
        description="Logprob entries one answer may carry: sequences × max_tokens × "
        "(top logprobs + 1), plus the prompt's under echo. About 60 bytes of JSON each, "
        "so the default bounds a body near 30 MB. Checked here when max_tokens (or "
        "max_tokens_cap) is known; the model replica checks it with its default too.",
    )
    schemas: SchemaBudget = Field(
        default_factory=SchemaBudget,
        description="Budgets for response_format and tool-parameter schemas.",
    )


def _bound_error(param: str, message: str) -> OpenAIError:
    return OpenAIError(message, 400, param=param, code="invalid_value")


# --- chat and completions -----------------------------------------------------------


async def check_chat(
    bounds: RequestBounds, req: ChatCompletionRequest, max_tokens_cap: int | None = None
) -> None:
    """Checks a parsed chat request against `bounds`.

    Args:
        bounds: the ingress's bounds.
        req: the request.
        max_tokens_cap: the ingress's cap on max_tokens, used for the logprob volume
            when the request names no max_tokens.

    Raises:
        OpenAIError: 400 naming the field past its bound.
    """
    _check_messages(bounds, req.messages)
    logprobs_param = "top_logprobs" if req.top_logprobs else "logprobs"
    _check_sampling(
        bounds,
        req,
        1,
        req.effective_max_tokens() or max_tokens_cap,
        req.logprob_count(),
        logprobs_param,
    )
    tools = req.tools or []
    if len(tools) > bounds.max_tools:
        raise _bound_error(
            "tools",
            f"The request has {len(tools)} tools; at most {bounds.max_tools} are allowed. "
            "Send only the tools this turn may need.",
        )
    schemas = [
        (f"tools.{i}.function.parameters", t.function.parameters)
        for i, t in enumerate(tools)
        if t.function.parameters is not None
    ]
    await _check_schemas(bounds.schemas, schemas + _response_schema(req))


async def check_completion(
    bounds: RequestBounds, req: CompletionRequest, max_tokens_cap: int | None = None
) -> None:
    """Checks a parsed completions request against `bounds` (see check_chat)."""
    prompts = req.prompt_list()
    chars = sum(len(p) for p in prompts if isinstance(p, str))
    if chars > bounds.max_prompt_chars:
        raise _bound_error(
            "prompt",
            f"The prompts have {chars} characters in all; at most "
            f"{bounds.max_prompt_chars} are allowed per request. Shorten them or split "
            "them over several requests.",
        )
    _check_sampling(
        bounds, req, len(prompts), req.max_tokens or max_tokens_cap, req.logprobs, "logprobs"
    )
    await _check_schemas(bounds.schemas, _response_schema(req))


def _check_messages(bounds: RequestBounds, messages: Sequence[ChatMessage]) -> None:
    if len(messages) > bounds.max_messages:
        raise _bound_error(
            "messages",
            f"The request has {len(messages)} messages; at most {bounds.max_messages} "
            "are allowed. Drop or summarise older turns.",
        )
    chars = sum(_message_chars(m) for m in messages)
    if chars > bounds.max_prompt_chars:
        raise _bound_error(
            "messages",
            f"The messages have {chars} characters of content in all; at most "
            f"{bounds.max_prompt_chars} are allowed per request. Shorten the conversation.",
        )


def _message_chars(message: ChatMessage) -> int:
    content = message.content
    chars = len(content) if isinstance(content, str) else sum(len(p.text) for p in content or [])
    for call in message.tool_calls or []:
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            chars += len(arguments)
    return chars


def _check_sampling(
    bounds: RequestBounds,
    req: SamplingFields,
    prompts: int,
    max_tokens: int | None,
    logprobs: int | None,
    logprobs_param: str,
) -> None:
    """stop, sequences and logprob volume: what chat and completions share."""
    stops = req.stop_list()
    if len(stops) > bounds.max_stop_sequences:
        raise _bound_error(
            "stop",
            f"stop has {len(stops)} sequences; at most {bounds.max_stop_sequences} are allowed.",
        )
    for i, stop in enumerate(stops):
        if len(stop) > bounds.max_stop_chars:
            raise _bound_error(
                "stop",
                f"stop sequence {i} has {len(stop)} characters; at most "
                f"{bounds.max_stop_chars} are allowed. Use a shorter marker.",
            )
    sequences = prompts * req.n
    if sequences > bounds.max_sequences_per_request:
        asked = f"{prompts} prompts × n={req.n} = {sequences}" if prompts > 1 else f"n={req.n}"
        raise _bound_error(
            "n",
            f"This request asks for {asked} sequences; at most "
            f"{bounds.max_sequences_per_request} are allowed per request. Lower n, or "
            "split the prompts over several requests.",
        )
    if logprobs is not None and max_tokens is not None:
        entries = sequences * max_tokens * (logprobs + 1)
        if entries > bounds.max_logprob_entries:
            raise _bound_error(
                logprobs_param,
                f"This request could return {entries} logprob entries ({sequences} "
                f"sequences × {max_tokens} tokens × {logprobs + 1} per token); at most "
                f"{bounds.max_logprob_entries} are allowed. Lower max_tokens, n or the "
                "number of top logprobs.",
            )


def _response_schema(req: SamplingFields) -> list[tuple[str, Any]]:
    spec = req.response_format.json_schema if req.response_format else None
    if spec is None or req.response_format is None or req.response_format.type != "json_schema":
        return []
    return [("response_format.json_schema.schema", spec.schema_)]


async def _check_schemas(budget: SchemaBudget, schemas: list[tuple[str, Any]]) -> None:
    if schemas:
        # In a worker thread: jsonschema's check of a schema at the node budget takes
        # ~0.3 s, which would stall every stream this ingress replica serves.
        await asyncio.to_thread(check_schemas, budget, schemas)
