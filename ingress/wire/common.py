"""Wire pieces every endpoint shares: the request base, ids, usage, model objects."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

logger = logging.getLogger("ray.serve")


class WireModel(BaseModel):
    """Base for requests: extra keys allowed, but logged so they are not silent."""

    # strict: "10" is not a number and "yes" is not a boolean, as in OpenAI's API.
    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _log_ignored(self) -> "WireModel":
        if self.model_extra:
            logger.info("ignored request fields: %s", sorted(self.model_extra))
        return self


def _created() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelObject(BaseModel):
    model_config = ConfigDict(extra="allow")  # our catalog fields ride along
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
