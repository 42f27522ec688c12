"""Wire pieces every endpoint shares: the request base, ids, usage, model objects."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger("ray.serve")

# The largest count or token id a request may carry. Engines keep these in 32- or 64-bit
# integers (vLLM fails with a 500 on `top_k: 10**30`), so every integer field of the
# wire types has an upper bound, this one unless the field has a smaller one.
MAX_INT32 = 2**31 - 1


class WireModel(BaseModel):
    """Base for requests: extra keys allowed, but logged so they are not silent."""

    # strict: "10" is not a number and "yes" is not a boolean, as in OpenAI's API.
    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _log_ignored(self) -> WireModel:
        if self.model_extra:
            logger.info("ignored request fields: %s", sorted(self.model_extra))
        return self


# OpenAI's metadata: at most 16 pairs, keys up to 64 and values up to 512 characters.
MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


def _created() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sortable_id(prefix: str) -> str:
    """An id that sorts by creation time (the nanosecond clock in fixed-width hex, then
    randomness), for objects listed newest first: `created_at` has one-second steps."""
    return f"{prefix}{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # --- not part of the OpenAI spec: our catalog fields -----------------------------
    task: str
    tasks: list[str]
    version: str
    deploy_id: str
    status: str
    # Why it does not serve at full strength yet ("preparing model: converting
    # weights (3/5)", "waiting for resources: needs CPU 1, cluster has 0 free");
    # null when it does (ingress/status.py).
    status_message: str | None = None
    # For a version that is a LoRA adapter: the base version it runs on.
    base_version: str | None = None
    running_replicas: int
    target_replicas: int
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
