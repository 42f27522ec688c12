"""The Responses API: POST /responses on the chat pipeline, and the stored ones
(GET and DELETE /responses/{id}, GET /responses/{id}/input_items).

POST: parse → earlier turns from the store (previous_response_id) → a chat request,
checked as chat checks one (ingress/responses.py to_chat) → the one Forwarder →
a Response object or its typed events → stored (store: true, OpenAI's default).
Every stored response belongs to the API key that made it; another key gets a 404.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deployments.contract import GenerationResult
from ingress import bounds, convert
from ingress import responses as logic
from ingress.endpoints import Api
from ingress.endpoints.generate import check_caps
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from ingress.http import engine_request_id, parse, read_request
from ingress.store import StoredResponse, StoreUnavailable
from ingress.streaming import SSEResponse, relay
from ingress.wire.chat import ChatCompletionRequest
from ingress.wire.responses import CreateResponseRequest, InputItem, ListInputItemsQuery


def _owner(ctx: RequestContext) -> str:
    return ctx.api_key or ""


def _unavailable(request_id: str) -> OpenAIError:
    return OpenAIError(
        f"The response store is unavailable (request id {request_id}). Retry later.",
        503,
        code="store_unavailable",
        retry_after=5,
    )


def _not_found(response_id: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(
        f"No response with id '{response_id}' was found.", 404, param=param, code="not_found"
    )


async def _stored(
    api: Api, ctx: RequestContext, response_id: str, param: str | None = None
) -> StoredResponse:
    try:
        stored = await api.state().get_response(_owner(ctx), response_id)
    except StoreUnavailable:
        raise _unavailable(ctx.request_id) from None
    if stored is None:
        raise _not_found(response_id, param)
    return stored


def _check_stored_size(api: Api, context: list[dict[str, Any]]) -> None:
    """A conversation past state.max_stored_bytes is refused before any work (400);
    with store: false it is not stored, so only the request bounds apply."""
    limit = api.state().config.max_stored_bytes
    size = len(json.dumps(context, ensure_ascii=False).encode())
    if size > limit:
        raise OpenAIError(
            f"This conversation is {size} bytes, more than the {limit} a stored response "
            "may hold. Send store: false with the whole conversation as input, or start "
            "a new one.",
            400,
            param="input",
            code="invalid_value",
        )


async def create_response(api: Api, request: Request, ctx: RequestContext) -> Response:
    req = await read_request(request, CreateResponseRequest, api.config.max_body_bytes)
    logic.check_supported(req)
    tools = logic.parse_tools(req.tools)
    items = logic.parse_items(req.input)
    earlier: list[dict[str, Any]] = []
    if req.previous_response_id is not None:
        previous = await _stored(api, ctx, req.previous_response_id, "previous_response_id")
        earlier = previous.context + previous.body["output"]
    context = [*earlier, *(logic.item_resource(i) for i in items)]
    if req.store:
        _check_stored_size(api, context)
    everything: list[InputItem] = logic.parse_items(earlier, "previous_response_id") + items
    try:
        chat = parse(ChatCompletionRequest, logic.to_chat(req, everything, tools))
        check_caps(api.config, chat)
        await bounds.check_chat(api.config.bounds, chat, api.config.max_tokens_cap)
    except OpenAIError as exc:
        exc.param = logic.chat_param(exc.param)
        raise
    entry = await api.forwarder.resolve(ctx, req.model)
    gen = convert.chat_request(chat, engine_request_id(request))
    gen.adapter = entry.adapter  # a version that is a LoRA adapter runs on its base
    shaper = logic.Shaper(req, tools)
    own_items = context[len(earlier) :]

    async def keep(body: dict[str, Any]) -> None:
        if req.store:
            stored = StoredResponse(
                id=shaper.response_id,
                owner=_owner(ctx),
                created_at=shaper.created_at,
                body=body,
                input_items=own_items,
                context=context,
            )
            try:
                await api.state().put_response(stored)
            except StoreUnavailable:
                raise _unavailable(ctx.request_id) from None

    if req.stream:
        stream = await api.forwarder.open_stream(ctx, entry, "generate", gen)
        events = logic.ResponseEvents(shaper)

        async def closing() -> str:
            text, final = events.done()
            await keep(final)  # stored before the client hears it is complete
            return text

        frames = relay(stream, events.chunk, closing, events.failed, ctx.request_id)
        return SSEResponse(frames, stream)
    result: GenerationResult = await api.forwarder.call(ctx, entry, "complete", gen)
    body = shaper.from_result(result)
    await keep(body)
    return JSONResponse(body)


async def get_response(api: Api, request: Request, ctx: RequestContext) -> Response:
    if request.query_params.get("stream") in ("true", "1"):
        raise logic.unsupported(
            "Replaying a stored response as a stream is not supported.", "stream"
        )
    stored = await _stored(api, ctx, request.path_params["response_id"])
    return JSONResponse(stored.body)


async def delete_response(api: Api, request: Request, ctx: RequestContext) -> Response:
    response_id = request.path_params["response_id"]
    try:
        deleted = await api.state().delete_response(_owner(ctx), response_id)
    except StoreUnavailable:
        raise _unavailable(ctx.request_id) from None
    if not deleted:
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(api: Api, request: Request, ctx: RequestContext) -> Response:
    query = parse(ListInputItemsQuery, dict(request.query_params))
    stored = await _stored(api, ctx, request.path_params["response_id"])
    items = stored.input_items if query.order == "asc" else stored.input_items[::-1]
    if query.after is not None:
        ids = [i["id"] for i in items]
        if query.after not in ids:
            raise OpenAIError(
                f"No input item with id '{query.after}' in this response.", 400, param="after"
            )
        items = items[ids.index(query.after) + 1 :]
    page = items[: query.limit]
    return Response(
        json.dumps(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > len(page),
            }
        ),
        media_type="application/json",
    )
