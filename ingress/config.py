"""Typed arguments of the ingress application (its `args` in serve_config.yaml)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ingress.bounds import RequestBounds


class AuthConfig(BaseModel):
    """API keys (ingress/auth.py). On unless switched off explicitly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Require a Bearer key on /v1/openai.")
    api_keys_env: str = Field(
        default="OPENAI_SERVE_API_KEYS",
        description="Environment variable holding plain keys, comma-separated (set it "
        "through the platform's secrets or the ingress's runtime_env).",
    )
    api_key_hashes_file: str | None = Field(
        default=None,
        description="File of SHA-256 hex digests of valid keys, one per line.",
    )
    protect_metrics: bool = Field(
        default=True,
        description="Require a key on GET /metrics too (health never): the text names "
        "models, versions and per-key counts.",
    )
    max_concurrent_requests_per_key: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight per API key on each ingress replica before the "
        "next one gets a 429 rate_limited; None: no per-key limit.",
    )

    @model_validator(mode="after")
    def _limit_needs_keys(self) -> AuthConfig:
        if self.max_concurrent_requests_per_key is not None and not self.enabled:
            raise ValueError(
                "max_concurrent_requests_per_key counts requests by API key: it needs "
                "auth.enabled; remove it or turn auth on"
            )
        return self


STATE_URL_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


def state_url_problem(url: str) -> str | None:
    """Why `url` cannot be the state store's URL (its driver), or None. The answer names
    the scheme only, never the rest (a password)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in STATE_URL_SCHEMES:
        return None
    shown = f"'{scheme}'" if scheme.replace("+", "").isalnum() else "none"
    return (
        f"the state store's URL must use the driver postgresql+asyncpg:// or "
        f"sqlite+aiosqlite:///, not {shown}"
    )


class StateConfig(BaseModel):
    """Where the ingress keeps state between requests (ingress/store.py): stored
    responses of the Responses API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        repr=False,  # may hold a password
        description="SQLAlchemy URL, postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB or "
        "sqlite+aiosqlite:///PATH; None: the variable `url_env`, else the SQLite file "
        "`data_dir`/state.db.",
    )
    url_env: str = Field(
        default="OPENAI_SERVE_STATE_URL",
        description="Environment variable holding the URL when `url` is None (KubeRay: "
        "from the Secret openai-serve-state).",
    )
    data_dir: str = Field(
        default="~/.openai-serve",
        description="Folder of the default SQLite file state.db (created mode 0700).",
    )
    response_max_age_s: float = Field(
        default=30 * 24 * 3600.0, gt=0, description="Stored responses older than this go."
    )
    max_responses_per_key: int = Field(
        default=10_000, ge=1, description="Stored responses per API key; the oldest go first."
    )
    max_stored_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Largest stored response (its JSON: response, input items, context).",
    )

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: str | None) -> str | None:
        problem = None if url is None else state_url_problem(url)
        if problem is None:
            return url
        # A ValidationError of our own, so that the error shows no input (the URL may
        # hold a password; pydantic would print it as input_value).
        error = InitErrorDetails(
            type=PydanticCustomError("state_url", problem), loc=(), input="<hidden>"
        )
        raise ValidationError.from_exception_data("StateConfig", [error])


class FilesConfig(BaseModel):
    """The Files API (ingress/endpoints/files.py): where uploaded bytes live
    (ingress/blobs.py) and how large an upload may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blob_uri: str | None = Field(
        default=None,
        description="Where file bytes live: a pyarrow.fs URI (s3://bucket/prefix, "
        "gs://bucket/prefix, file:///abs/path); None: the folder `state.data_dir`/files "
        "(created mode 0700).",
    )
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, gt=0, description="Largest upload; a larger one gets a 413."
    )
    max_file_lines: int = Field(
        default=50_000, gt=0, description="Most lines (requests) in an uploaded file; more: 400."
    )
    max_files_per_key: int = Field(
        default=10_000, ge=1, description="Files an API key may hold; one more upload: 400."
    )


class BatchesConfig(BaseModel):
    """The Batch API's supervisor and its pipeline (ingress/batches/)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    online_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The share of a model's max_concurrent_requests that one batch's "
        "requests may hold at once; the rest stays free for online requests.",
    )
    window_s: float | None = Field(
        default=None,
        gt=0,
        description="A batch's window in seconds; None: its completion_window (24 h). "
        "Past it the batch expires with the output it has.",
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the supervisor looks for work."
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a supervisor's claim on a batch lasts unrenewed; a "
        "supervisor that died loses its batches to the next one after this.",
    )
    checkpoint_s: float = Field(
        default=2.0,
        gt=0,
        description="How often finished lines are written to the batch's checkpoint "
        "(and request_counts updated); a restart redoes at most this much.",
    )
    supervisor: dict[str, Any] = Field(
        default_factory=dict, description="Serve options for the supervisor deployment."
    )


class IngressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: AuthConfig = Field(default_factory=AuthConfig)
    state: StateConfig = Field(
        default_factory=StateConfig,
        description="The state store (ingress/store.py): SQLite by default, PostgreSQL by URL.",
    )
    files: FilesConfig = Field(
        default_factory=FilesConfig,
        description="The Files API: where file bytes live (ingress/blobs.py), upload bounds.",
    )

    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Larger request bodies get a 413."
    )
    max_header_bytes: int = Field(
        default=32 * 1024, gt=0, description="Larger header sets get a 431."
    )
    max_header_count: int = Field(default=100, gt=0, description="More headers get a 431.")
    max_n: int = Field(default=16, ge=1, description="Cap on `n` (choices per request).")
    max_tokens_cap: int | None = Field(
        default=None, ge=1, description="Cap on max_tokens; larger asks get a 400."
    )
    bounds: RequestBounds = Field(
        default_factory=RequestBounds,
        description="Bounded work per chat/completions request: sequences, stop, "
        "messages, prompt characters, tools, logprobs, JSON-schema budgets "
        "(ingress/bounds.py; docs/production.md 'Bounded work per request').",
    )
    catalog_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the model catalog is re-read from "
        "the Serve controller; an unknown model also triggers a refresh (at most "
        "every `catalog_miss_refresh_s`).",
    )
    catalog_miss_refresh_s: float = Field(default=0.5, ge=0)
    batches: BatchesConfig = Field(
        default_factory=BatchesConfig,
        description="The Batch API's supervisor (ingress/batches/).",
    )
    deployment: dict[str, Any] = Field(
        default_factory=dict, description="Serve options for the ingress deployment."
    )
