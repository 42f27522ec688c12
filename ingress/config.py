"""Typed arguments of the ingress application (its `args` in serve_config.yaml)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IngressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Larger request bodies get a 413."
    )
    max_n: int = Field(default=16, ge=1, description="Cap on `n` (choices per request).")
    catalog_refresh_s: float = Field(
        default=2.0, gt=0, description="How often the model catalog is re-read from "
        "the Serve controller; an unknown model also triggers a refresh (at most "
        "every `catalog_miss_refresh_s`).",
    )
    catalog_miss_refresh_s: float = Field(default=0.5, ge=0)
    deployment: dict[str, Any] = Field(
        default_factory=dict, description="Serve options for the ingress deployment."
    )
