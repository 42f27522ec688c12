"""Embeddings: CreateEmbeddingRequest and CreateEmbeddingResponse.

https://platform.openai.com/docs/api-reference/embeddings/create
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from ingress.wire.common import MAX_INT32, WireModel

# OpenAI's cap on inputs per request (the schema's maxItems).
MAX_INPUTS = 2048


def _invalid(message: str) -> PydanticCustomError:
    # A custom error keeps the message as written (no "Value error, " prefix).
    return PydanticCustomError("invalid_input", message)


def _check_ids(ids: list[Any]) -> None:
    # Whether an id is in the model's vocabulary is the replica's check; this one keeps
    # ids the engine cannot even hold (10**30) out.
    if any(isinstance(i, int) and not 0 <= i <= MAX_INT32 for i in ids):
        raise _invalid(f"token ids must be between 0 and {MAX_INT32}.")


class EmbeddingRequest(WireModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=MAX_INT32)
    user: str | None = None

    # --- Not part of the OpenAI spec --------------------------------------------
    # vLLM's name and meaning: cut inputs longer than this many tokens instead of
    # rejecting them; -1 cuts at the model's maximum input length.
    truncate_prompt_tokens: int | None = Field(default=None, le=MAX_INT32)

    @field_validator("input")
    @classmethod
    def _check_input(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v:
                raise _invalid("input must not be an empty string.")
            return v
        if not v:
            raise _invalid("input must not be an empty list.")
        if len(v) > MAX_INPUTS:
            raise _invalid(
                f"input has {len(v)} items; at most {MAX_INPUTS} inputs are "
                "allowed per request. Split them over several requests."
            )
        for i, item in enumerate(v):
            if isinstance(item, int):
                _check_ids(v)  # one input of token ids
                break
            if isinstance(item, list):
                _check_ids(item)
            if not item:
                kind = "string" if isinstance(item, str) else "token list"
                raise _invalid(f"input[{i}] is an empty {kind}; every input needs content.")
        return v

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _check_truncate(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and v < 1:
            raise _invalid(
                "truncate_prompt_tokens must be -1 (the model's maximum) or "
                "a positive number of tokens."
            )
        return v

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: one string or one token list becomes a list of one."""
        v = self.input
        if isinstance(v, str):
            return [v]
        if isinstance(v[0], int):
            return [v]
        return v


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage


def encode_vector(raw: bytes, encoding_format: Literal["float", "base64"]) -> list[float] | str:
    """One vector from the replica (little-endian float32 bytes) in the wire format.

    `base64` is those bytes as they are: what OpenAI sends and the openai SDK
    decodes (numpy `frombuffer(..., dtype="float32")`). `float` widens each value
    to a double exactly, so both formats give a client the same numbers.
    """
    if encoding_format == "base64":
        return base64.b64encode(raw).decode("ascii")
    values = array("f")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def embedding_response(
    model: str,
    vectors: list[bytes],
    prompt_tokens: int,
    encoding_format: Literal["float", "base64"],
) -> EmbeddingResponse:
    """The response body; `model` echoes what the client asked for."""
    # model_construct: up to 2048 x 1024 floats that need no validation; validating
    # them would cost more than the encoding.
    data = [
        Embedding.model_construct(
            index=i, embedding=encode_vector(v, encoding_format), object="embedding"
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingResponse(
        data=data,
        model=model,
        usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
    )
