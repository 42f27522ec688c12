"""Sampling fields that chat and completions share (OpenAI's order, then our extras)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingress.wire.common import MAX_INT32, WireModel


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`json` is the reference's shorter alias of `json_object`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        # The schema itself is checked after parsing, with its budgets and in a worker
        # thread (ingress/bounds.py): jsonschema's check of a large one takes seconds.
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        return self

    def to_contract(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_schema":
            assert self.json_schema is not None  # checked above
            return {"type": "json_schema", "schema": self.json_schema.schema_}
        return {"type": "json_object"}


class SamplingFields(WireModel):
    """Fields chat and completions share."""

    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    n: int = Field(default=1, ge=1, le=MAX_INT32)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None

    # --- Not part of the OpenAI spec: vLLM-style sampling extras ---------------
    top_k: int | None = Field(default=None, ge=-1, le=MAX_INT32)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    stop_token_ids: list[Annotated[int, Field(ge=0, le=MAX_INT32)]] | None = Field(
        default=None, max_length=64
    )
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        # How many and how long: ingress/bounds.py, against the configured bounds.
        if isinstance(v, list) and any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
