"""The Batch API: POST /batches, GET /batches, GET /batches/{id},
POST /batches/{id}/cancel.

The endpoint only records what was asked (a `validating` batch in the state store) and
answers from the store; the work is the supervisor's (ingress/batches/). Every batch
belongs to the API key that made it: another key gets a 404 and cannot cancel it.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingress.batches.input import ENDPOINTS
from ingress.endpoints import Api
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from ingress.http import parse, read_request
from ingress.store import BatchRecord, StoreUnavailable
from ingress.wire.batches import CreateBatchRequest, ListBatchesQuery
from ingress.wire.common import sortable_id

WINDOW_S = {"24h": 24 * 3600.0}
# A Batch object's optional fields (output_file_id, in_progress_at, ...) are absent until
# set, not null: OpenAI's schema types them as string / integer.
CANCELLABLE = ("validating", "in_progress")


def _owner(ctx: RequestContext) -> str:
    return ctx.api_key or ""


def _unavailable(ctx: RequestContext) -> OpenAIError:
    return OpenAIError(
        f"The state store is unavailable (request id {ctx.request_id}). Retry later.",
        503,
        code="store_unavailable",
        retry_after=5,
    )


def _not_found(batch_id: str) -> OpenAIError:
    return OpenAIError(f"No batch with id '{batch_id}' was found.", 404, code="not_found")


async def create_batch(api: Api, request: Request, ctx: RequestContext) -> Response:
    req = await read_request(request, CreateBatchRequest, api.config.max_body_bytes)
    if req.endpoint not in ENDPOINTS:
        raise OpenAIError(
            f"Batches run on {', '.join(ENDPOINTS)}, not {req.endpoint!r}.",
            400,
            param="endpoint",
            code="unsupported_value",
        )
    store, owner = api.state(), _owner(ctx)
    try:
        source = await store.get_file(owner, req.input_file_id)
        if source is None:
            raise OpenAIError(
                f"No file with id '{req.input_file_id}' was found.",
                404,
                param="input_file_id",
                code="not_found",
            )
        if source.purpose != "batch":
            raise OpenAIError(
                "The input file must be uploaded with purpose 'batch'.",
                400,
                param="input_file_id",
                code="invalid_value",
            )
        now = int(time.time())
        window = api.config.batches.window_s or WINDOW_S[req.completion_window]
        body: dict[str, Any] = {
            "id": sortable_id("batch_"),
            "object": "batch",
            "endpoint": req.endpoint,
            "input_file_id": req.input_file_id,
            "completion_window": req.completion_window,
            "status": "validating",
            "created_at": now,
            "expires_at": now + int(window),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.metadata or {},
        }
        await store.put_batch(BatchRecord(body["id"], owner, "validating", now, body))
    except StoreUnavailable:
        raise _unavailable(ctx) from None
    if api.wake_batches is not None:
        api.wake_batches()
    return JSONResponse(body)


async def get_batch(api: Api, request: Request, ctx: RequestContext) -> Response:
    batch_id = request.path_params["batch_id"]
    try:
        record = await api.state().get_batch(_owner(ctx), batch_id)
    except StoreUnavailable:
        raise _unavailable(ctx) from None
    if record is None:
        raise _not_found(batch_id)
    return JSONResponse(record.body)


async def list_batches(api: Api, request: Request, ctx: RequestContext) -> Response:
    query = parse(ListBatchesQuery, dict(request.query_params))
    try:
        page, has_more = await api.state().list_batches(_owner(ctx), query.limit, query.after)
    except StoreUnavailable:
        raise _unavailable(ctx) from None
    data = [r.body for r in page]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


async def cancel_batch(api: Api, request: Request, ctx: RequestContext) -> Response:
    batch_id = request.path_params["batch_id"]
    store, owner = api.state(), _owner(ctx)
    try:
        record = await store.transition(
            batch_id, CANCELLABLE, "cancelling", {"cancelling_at": int(time.time())}, owner=owner
        )
        if record is None:
            current = await store.get_batch(owner, batch_id)
            if current is None:
                raise _not_found(batch_id)
            if current.status not in ("cancelling", "cancelled"):
                raise OpenAIError(
                    f"A batch that is {current.status} cannot be cancelled.",
                    400,
                    code="invalid_state",
                )
            record = current  # cancelling twice answers as the first time
    except StoreUnavailable:
        raise _unavailable(ctx) from None
    return JSONResponse(record.body)
