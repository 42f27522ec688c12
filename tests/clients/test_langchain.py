"""LangChain (`langchain-openai`, pinned in pyproject.toml's `test` extra) against the real
server, as its users point it at us: `ChatOpenAI` and `OpenAIEmbeddings` with only
`base_url` changed. The tiny random model answers junk, so the checks are on the
protocol: text and usage arrive, forced tool calls and structured output parse (the
server constrains them with the request's JSON schema), vectors are MiniLM's."""

from __future__ import annotations

import json
import math
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.conftest import EMBEDDINGS_MODEL, TINY_MODEL

pytestmark = pytest.mark.e2e

HELLO = "Hello there"


def _chat(base_url: str, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(
        model=TINY_MODEL,
        base_url=base_url,
        api_key="unused",
        temperature=0,
        max_retries=0,
        timeout=120,
        **kwargs,
    )


def test_invoke(openai_stack):
    msg = _chat(openai_stack, max_tokens=8).invoke(HELLO)
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, str) and msg.content
    assert msg.response_metadata["model_name"] == TINY_MODEL
    assert msg.response_metadata["finish_reason"] in ("length", "stop")
    usage = msg.usage_metadata
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 8
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_stream_with_usage(openai_stack):
    llm = _chat(openai_stack, max_tokens=12, stream_usage=True)
    whole = llm.invoke(HELLO)
    chunks = list(llm.stream(HELLO))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == whole.content
    # stream_usage: stream_options.include_usage asked for; OpenAI sends the counts once,
    # in the chunk with `choices: []` before [DONE] (LangChain ends with an empty chunk
    # of its own).
    with_usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert with_usage[-1] == whole.usage_metadata
    # What LangChain users read: the chunks added up (usage_metadata is summed), as
    # LangChain's own docs show. Usage on more than one chunk would count twice.
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == whole.content
    assert merged.usage_metadata == whole.usage_metadata, (
        f"usage on {len(with_usage)} chunks, summed by LangChain: {with_usage}"
    )


@tool
def get_weather(unit: Literal["c", "f"], rain: bool) -> str:
    """The weather now, in the given unit."""
    return f"20 {unit}, {'rain' if rain else 'dry'}"


@pytest.mark.parametrize("tool_choice", ["get_weather", "any"])
def test_bind_tools_forced(openai_stack, tool_choice):
    # "any" is LangChain's word for OpenAI's "required"; a name forces that function.
    # The random model calls a tool only when forced: the server then constrains its
    # output to the tools' schemas.
    llm = _chat(openai_stack, max_tokens=200).bind_tools(
        [get_weather], tool_choice=tool_choice, strict=True
    )
    msg = llm.invoke("What is the weather in Paris?")
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    assert len(msg.tool_calls) >= 1
    for call in msg.tool_calls:
        assert call["name"] == "get_weather" and call["id"]
        assert call["args"]["unit"] in ("c", "f") and isinstance(call["args"]["rain"], bool)
        # The tool runs on what the model sent.
        assert get_weather.invoke(call["args"]).startswith("20 ")
    assert not msg.invalid_tool_calls


class Verdict(BaseModel):
    """A tiny schema, so that the random model ends it well within max_tokens."""

    ok: bool
    color: Literal["red", "green", "blue"]


def test_with_structured_output_json_schema(openai_stack):
    llm = _chat(openai_stack, max_tokens=200).with_structured_output(
        Verdict, method="json_schema", include_raw=True
    )
    out = llm.invoke("Is the sky blue? Answer with a color.")
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"], Verdict)
    assert Verdict.model_validate(json.loads(out["raw"].content)) == out["parsed"]


def test_embeddings(openai_stack, minilm_app):
    emb = OpenAIEmbeddings(
        model=EMBEDDINGS_MODEL,
        base_url=openai_stack,
        api_key="unused",
        # Its default tokenizes with tiktoken (OpenAI's models) and sends token ids.
        check_embedding_ctx_length=False,
        max_retries=0,
        timeout=120,
    )
    docs = emb.embed_documents(["A cat sits on the mat.", "The stock market fell today."])
    query = emb.embed_query("Where is the cat?")
    assert [len(v) for v in docs] == [384, 384] and len(query) == 384
    for v in [*docs, query]:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    # MiniLM's real weights: the query is closer to the cat than to the market.
    assert cos(query, docs[0]) > cos(query, docs[1])
