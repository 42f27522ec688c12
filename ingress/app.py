"""The ASGI app: routes under /v1/openai, and where each request goes.

A request's path through this file:
    read_json (size, content type, JSON)  →  parse (pydantic wire type → 400)
    →  resolve (catalog: model string → application; 404 / 400 / 503)
    →  forward (cached handle: stream → SSE, else one JSON body)
Every failure is an OpenAIError, turned into a response in `_endpoint` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deployments.contract import ErrorInfo, GenerateRequest, GenerationResult
from ingress.catalog import Catalog, CatalogEntry
from ingress.config import IngressConfig
from ingress.convert import chat_request, completion_request
from ingress.errors import OpenAIError, from_validation_error, internal_error
from ingress.handles import HandleCache
from ingress.streaming import ChunkFramer, sse_stream
from ingress.wire import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelList,
    ModelObject,
    SamplingFields,
    Usage,
    new_id,
)

PREFIX = "/v1/openai"
W = TypeVar("W", bound=BaseModel)
_JSON_TYPES = {"application/json", "text/json"}


def request_id_of(request: Request) -> str:
    """Serve's proxy honours a client's `x-request-id` or makes one, puts it in the
    request headers and returns it in the response; it also tags Serve's logs."""
    return request.headers.get("x-request-id") or new_id("req")


def engine_request_id(request: Request) -> str:
    # Clients may reuse an x-request-id; the engine needs a unique id per request.
    return f"{request_id_of(request)}-{uuid.uuid4().hex[:8]}"


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 413 / 415 / 400."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise OpenAIError(f"Content-Type must be application/json, not {ctype!r}.", 415,
                          code="unsupported_media_type")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OpenAIError(f"Request body is larger than {limit} bytes.", 413,
                          code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise OpenAIError(f"Request body is larger than {limit} bytes.", 413,
                              code="request_too_large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise OpenAIError("The body is not valid JSON. Send a JSON object.", 400,
                          code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError("The body must be a JSON object.", 400, code="invalid_json")
    return data


def parse(model: type[W], data: dict[str, Any]) -> W:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise OpenAIError("The body is nested too deeply.", 400) from None


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The one place a failure becomes a response."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except OpenAIError as exc:
            return exc.response()
        except Exception as exc:
            return internal_error(request_id_of(request), exc).response()

    return run


class OpenAIService:
    """Endpoint handlers; holds the catalog and the handle cache."""

    def __init__(self, config: IngressConfig, catalog: Catalog, handles: HandleCache) -> None:
        self.config = config
        self.catalog = catalog
        self.handles = handles

    # --- model resolution ---------------------------------------------------------

    async def resolve(self, model: str, task: str) -> CatalogEntry:
        entry = self.catalog.resolve(model)
        if entry is None:  # maybe deployed since the last refresh
            await self.catalog.refresh_if_stale(self.config.catalog_miss_refresh_s)
            entry = self.catalog.resolve(model)
        if entry is None:
            raise OpenAIError(f"The model '{model}' does not exist.", 404, param="model",
                              code="model_not_found")
        if task not in entry.card.tasks:
            served = ", ".join(entry.card.tasks)
            raise OpenAIError(f"The model '{model}' serves {served}, not {task}.", 400,
                              param="model", code="model_task_mismatch")
        if entry.status == "DEPLOY_FAILED" or (entry.status == "UNHEALTHY"
                                               and entry.running_replicas == 0):
            raise OpenAIError(f"The model '{model}' is unavailable: {entry.status}: "
                              f"{entry.message or 'no detail'}", 503,
                              code="model_unavailable", retry_after=30)
        return entry

    def _check_caps(self, req: SamplingFields) -> None:
        if req.n > self.config.max_n:
            raise OpenAIError(f"n must be at most {self.config.max_n}.", 400, param="n",
                              code="invalid_value")

    # --- endpoints ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_models(self, request: Request) -> Response:
        data = []
        for entry in self.catalog.entries():
            for model_id in self.catalog.routable_ids(entry):
                data.append(self._model_object(model_id, entry))
        return Response(ModelList(data=data).model_dump_json(), media_type="application/json")

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        entry = self.catalog.resolve(model_id)
        if entry is None:
            await self.catalog.refresh_if_stale(self.config.catalog_miss_refresh_s)
            entry = self.catalog.resolve(model_id)
        if entry is None:
            raise OpenAIError(f"The model '{model_id}' does not exist.", 404, param="model",
                              code="model_not_found")
        return Response(self._model_object(model_id, entry).model_dump_json(),
                        media_type="application/json")

    @staticmethod
    def _model_object(model_id: str, entry: CatalogEntry) -> ModelObject:
        return ModelObject(
            id=model_id, created=0, owned_by=entry.card.owned_by,
            task=entry.card.tasks[0], tasks=list(entry.card.tasks),
            version=entry.card.version, deploy_id=entry.deploy_id, status=entry.status,
            running_replicas=entry.running_replicas, target_replicas=entry.target_replicas,
            max_model_len=entry.card.max_model_len,
        )

    async def chat_completions(self, request: Request) -> Response:
        req = parse(ChatCompletionRequest, await read_json(request, self.config.max_body_bytes))
        self._check_caps(req)
        entry = await self.resolve(req.model, "chat")
        gen = chat_request(req, engine_request_id(request))
        return await self._forward(entry, gen, req, "chat")

    async def completions(self, request: Request) -> Response:
        req = parse(CompletionRequest, await read_json(request, self.config.max_body_bytes))
        self._check_caps(req)
        entry = await self.resolve(req.model, "completion")
        gen = completion_request(req, engine_request_id(request))
        return await self._forward(entry, gen, req, "completion")

    async def _forward(self, entry: CatalogEntry, gen: GenerateRequest,
                       req: SamplingFields, kind: Literal["chat", "completion"]) -> Response:
        model = getattr(req, "model")  # echo what the client asked for
        response_id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        if req.stream:
            handle = await self.handles.get(entry.deploy_id, stream=True)
            stream = handle.generate.remote(gen)
            first = await _first_item(stream)
            if isinstance(first, ErrorInfo):
                raise OpenAIError.from_info(first)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            framer = ChunkFramer(kind, response_id, int(time.time()), model, include_usage)
            return StreamingResponse(
                sse_stream(framer, first, stream, gen.request_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        handle = await self.handles.get(entry.deploy_id, stream=False)
        result = await handle.complete.remote(gen)
        if isinstance(result, ErrorInfo):
            raise OpenAIError.from_info(result)
        body = _whole_response(kind, response_id, model, result)
        return Response(body.model_dump_json(), media_type="application/json")


async def _first_item(stream: AsyncIterator[Any]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        raise RuntimeError("model deployment ended the stream without output") from None


def _whole_response(kind: str, response_id: str, model: str,
                    result: GenerationResult) -> BaseModel:
    usage = Usage(prompt_tokens=result.prompt_tokens,
                  completion_tokens=result.completion_tokens,
                  total_tokens=result.prompt_tokens + result.completion_tokens)
    if kind == "chat":
        return ChatCompletion(id=response_id, model=model, usage=usage, choices=[
            ChatChoice(index=i, message=AssistantMessage(content=text), finish_reason=reason)
            for i, (text, reason) in enumerate(zip(result.texts, result.finish_reasons))
        ])
    return Completion(id=response_id, model=model, usage=usage, choices=[
        CompletionChoice(index=i, text=text, finish_reason=reason)
        for i, (text, reason) in enumerate(zip(result.texts, result.finish_reasons))
    ])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"No route for {request.url.path}. The API lives under {PREFIX}/.",
                405: f"Method {request.method} is not allowed on {request.url.path}."}
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return OpenAIError(messages.get(exc.status_code, str(exc.detail)), exc.status_code,
                       code=code).response()


def build_asgi_app(service: OpenAIService) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        refresher = asyncio.create_task(service.catalog.run_refresh_loop())
        try:
            yield
        finally:
            refresher.cancel()

    routes = [
        Route("/health", _endpoint(service.health), methods=["GET"]),
        Route(f"{PREFIX}/models", _endpoint(service.list_models), methods=["GET"]),
        Route(f"{PREFIX}/models/{{model_id:path}}", _endpoint(service.get_model), methods=["GET"]),
        Route(f"{PREFIX}/chat/completions", _endpoint(service.chat_completions), methods=["POST"]),
        Route(f"{PREFIX}/completions", _endpoint(service.completions), methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
