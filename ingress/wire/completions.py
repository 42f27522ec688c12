"""Completions: CreateCompletionRequest and its response (also the stream chunk shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ingress.wire.common import MAX_INT32, Usage, _created
from ingress.wire.sampling import SamplingFields

MAX_LOGPROBS = 5  # OpenAI's limit for completions
MAX_PROMPTS = 64


class CompletionRequest(SamplingFields):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: Any) -> Any:
        prompts = v if isinstance(v, list) and v and isinstance(v[0], (str, list)) else [v]
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if any(p == "" or p == [] for p in prompts):
            raise ValueError("prompts must not be empty")
        if any(isinstance(p, list) and any(not 0 <= i <= MAX_INT32 for i in p) for p in prompts):
            raise ValueError(f"token ids must be between 0 and {MAX_INT32}")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix (insertion) is not supported by these models")
        return v

    def prompt_list(self) -> list[str | list[int]]:
        v = self.prompt
        if isinstance(v, list) and v and isinstance(v[0], (str, list)):
            return list(v)
        return [v]  # type: ignore[list-item]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    """Non-streamed completion; streamed chunks use the same shape."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_created)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
