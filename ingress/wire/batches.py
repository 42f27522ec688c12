"""The Batch API's requests (its objects are plain dicts in OpenAI's shape, kept in the
state store: ingress/endpoints/batches.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingress.wire.common import Metadata, WireModel


class CreateBatchRequest(WireModel):
    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: str = Field(min_length=1, max_length=64)  # checked against ENDPOINTS (400)
    completion_window: Literal["24h"]
    metadata: Metadata | None = None


class ListBatchesQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)
    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = Field(default=None, max_length=128)
