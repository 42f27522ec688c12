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
import functools
import json
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deployments.contract import ErrorInfo, GenerateRequest, GenerationResult
from ingress.auth import ApiKeys, AuthMiddleware
from ingress.catalog import Catalog, CatalogEntry
from ingress.config import IngressConfig
from ingress import convert
from ingress.errors import OpenAIError, from_validation_error, serve_error
from ingress.embeddings import embeddings_endpoint
from ingress.guards import HeaderLimitMiddleware
from ingress.handles import HandleCache, wait_assigned
from ingress.images import images_endpoint
from ingress.limits import ConcurrencyLimiter, Slot
from ingress.metrics import NoMetrics, StreamRecorder, node_metrics_text
from ingress.streaming import ChunkFramer, sse_stream
from ingress.wire.chat import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest
from ingress.wire.common import ModelList, ModelObject, Usage, new_id
from ingress.wire.completions import Completion, CompletionChoice, CompletionRequest
from ingress.wire.sampling import SamplingFields

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


def _endpoint(handler: Callable[[Request], Awaitable[Response]],
              metrics: Any = None, name: str = "") -> Callable[[Request], Awaitable[Response]]:
    """The one place a failure becomes a response (and each answer is counted)."""

    async def run(request: Request) -> Response:
        try:
            response = await handler(request)
        except OpenAIError as exc:
            response = exc.response()
        except Exception as exc:
            response = serve_error(exc, request_id_of(request)).response()
        if metrics is not None:
            entry = request.scope.get("state", {}).get("catalog_entry")
            metrics.requests.inc(1, metrics.tags(
                entry.card.model if entry else "", entry.deploy_id if entry else "",
                endpoint=name, status=response.status_code))
        return response

    return run


class OpenAIService:
    """Endpoint handlers; holds the catalog and the handle cache."""

    def __init__(self, config: IngressConfig, catalog: Catalog, handles: HandleCache,
                 metrics: Any = None) -> None:
        self.config = config
        self.catalog = catalog
        self.handles = handles
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.limiter = ConcurrencyLimiter()

    def admit(self, request: Request, entry: CatalogEntry) -> Slot:
        """Counts the request against its model's concurrency limit (429 past it)."""
        request.scope.setdefault("state", {})["catalog_entry"] = entry
        tags = self.metrics.tags(entry.card.model, entry.deploy_id)
        try:
            slot = self.limiter.acquire(entry.deploy_id, entry.card.max_concurrent_requests,
                                        entry.card.model)
        except OpenAIError:
            self.metrics.rejected.inc(1, {**tags, "reason": "concurrency_limit"})
            raise
        self.metrics.running.set(self.limiter.inflight(entry.deploy_id), tags)
        return slot

    async def call_model(self, request: Request, entry: CatalogEntry, method: str,
                         payload: Any) -> Any:
        """One unary call to a model application: admitted against its limit, with
        a bounded wait for a replica; an ErrorInfo answer becomes an OpenAIError."""
        slot = self.admit(request, entry)
        try:
            handle = await self.handles.get(entry.deploy_id, stream=False)
            response = getattr(handle, method).remote(payload)
            await self.wait_for_replica(response, entry)
            result = await response
        finally:
            self.release(slot, entry)
        if isinstance(result, ErrorInfo):
            raise OpenAIError.from_info(result)
        return result

    def release(self, slot: Slot, entry: CatalogEntry) -> None:
        slot.release()
        self.metrics.running.set(self.limiter.inflight(entry.deploy_id),
                                 self.metrics.tags(entry.card.model, entry.deploy_id))

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
        failed = self._failure(entry)
        if failed is not None:
            raise failed
        return entry

    async def wait_for_replica(self, response: Any, entry: CatalogEntry) -> None:
        """Bounds the wait for a replica, and stops it early if the application fails
        to deploy meanwhile (its queued requests would otherwise wait the full bound)."""
        deadline = time.monotonic() + entry.card.wait_timeout_s
        while True:
            try:
                await wait_assigned(response, min(2.0, max(0.0, deadline - time.monotonic())),
                                    cancel_on_timeout=False)
                return
            except TimeoutError:
                pass
            current = self.catalog.resolve(f"deploy_id:{entry.deploy_id}") or entry
            failed = self._failure(current)
            if failed is not None or time.monotonic() >= deadline:
                response.cancel()
                raise failed or OpenAIError(
                    f"The model '{entry.card.model}' ({entry.deploy_id}) has no replica "
                    f"ready after {entry.card.wait_timeout_s:g} s (status "
                    f"{current.status}). Retry later.", 503, code="model_not_ready",
                    retry_after=30) from None

    @staticmethod
    def _failure(entry: CatalogEntry) -> OpenAIError | None:
        if entry.status == "DEPLOY_FAILED" or (entry.status == "UNHEALTHY"
                                               and entry.running_replicas == 0):
            return OpenAIError(f"The model '{entry.card.model}' is unavailable: "
                               f"{entry.status}: {entry.message or 'no detail'}", 503,
                               code="model_unavailable", retry_after=30)
        return None

    def _check_caps(self, req: SamplingFields) -> None:
        if req.n > self.config.max_n:
            raise OpenAIError(f"n must be at most {self.config.max_n}.", 400, param="n",
                              code="invalid_value")
        cap = self.config.max_tokens_cap
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(req, name, None)
            if cap is not None and value is not None and value > cap:
                raise OpenAIError(f"{name} must be at most {cap}.", 400, param=name,
                                  code="invalid_value")

    # --- endpoints ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, request: Request) -> Response:
        """This node's Prometheus text, from Ray's metrics agent (the same numbers a
        Prometheus scrape of the agent's port gets), so one URL (and, with
        auth.protect_metrics, one key) serves both the API and its metrics."""
        text = await asyncio.to_thread(node_metrics_text)
        return Response(text, media_type="text/plain; version=0.0.4")

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
        gen = convert.chat_request(req, engine_request_id(request))
        return await self._forward(request, entry, gen, req, "chat")

    async def completions(self, request: Request) -> Response:
        req = parse(CompletionRequest, await read_json(request, self.config.max_body_bytes))
        self._check_caps(req)
        entry = await self.resolve(req.model, "completion")
        gen = convert.completion_request(req, engine_request_id(request))
        return await self._forward(request, entry, gen, req, "completion")

    async def _forward(self, request: Request, entry: CatalogEntry, gen: GenerateRequest,
                       req: SamplingFields, kind: Literal["chat", "completion"]) -> Response:
        slot = self.admit(request, entry)
        try:
            response = await self._generate(entry, gen, req, kind, slot)
        except BaseException:
            self.release(slot, entry)
            raise
        if not isinstance(response, StreamingResponse):
            self.release(slot, entry)
        return response

    async def _generate(self, entry: CatalogEntry, gen: GenerateRequest, req: SamplingFields,
                        kind: Literal["chat", "completion"], slot: Slot) -> Response:
        model = getattr(req, "model")  # echo what the client asked for
        response_id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        recorder = StreamRecorder(self.metrics, entry.card.model, entry.deploy_id, kind)
        if req.stream:
            handle = await self.handles.get(entry.deploy_id, stream=True)
            stream = handle.generate.remote(gen)
            await self.wait_for_replica(stream, entry)
            first = await _first_item(stream)
            if isinstance(first, ErrorInfo):
                raise OpenAIError.from_info(first)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            framer = ChunkFramer(kind, response_id, int(time.time()), model, include_usage)
            recorder.on_close = lambda: self.release(slot, entry)
            return StreamingResponse(
                sse_stream(framer, first, stream, gen.request_id, recorder),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        handle = await self.handles.get(entry.deploy_id, stream=False)
        response = handle.complete.remote(gen)
        await self.wait_for_replica(response, entry)
        result = await response
        if isinstance(result, ErrorInfo):
            raise OpenAIError.from_info(result)
        recorder.finish(result.prompt_tokens, result.completion_tokens)
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
            ChatChoice(index=c.index, finish_reason=c.finish_reason,
                       logprobs=convert.chat_logprobs(c.logprobs),
                       message=AssistantMessage(
                           content=c.text if (c.text or not c.tool_calls) else None,
                           tool_calls=convert.tool_calls(c.tool_calls)))
            for c in result.choices
        ])
    return Completion(id=response_id, model=model, usage=usage, choices=[
        CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason,
                         logprobs=convert.completion_logprobs(c.logprobs))
        for c in result.choices
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

    m = service.metrics
    routes = [
        Route("/health", _endpoint(service.health), methods=["GET"]),
        Route("/metrics", _endpoint(service.metrics_text), methods=["GET"]),
        Route(f"{PREFIX}/models", _endpoint(service.list_models), methods=["GET"]),
        Route(f"{PREFIX}/models/{{model_id:path}}", _endpoint(service.get_model), methods=["GET"]),
        Route(f"{PREFIX}/chat/completions", _endpoint(service.chat_completions, m, "chat"),
              methods=["POST"]),
        Route(f"{PREFIX}/completions", _endpoint(service.completions, m, "completions"),
              methods=["POST"]),
        Route(f"{PREFIX}/embeddings", _endpoint(functools.partial(embeddings_endpoint, service),
                                                m, "embeddings"), methods=["POST"]),
        Route(f"{PREFIX}/images/generations", _endpoint(
            functools.partial(images_endpoint, service), m, "images"), methods=["POST"]),
    ]
    middleware = [Middleware(HeaderLimitMiddleware, max_bytes=service.config.max_header_bytes,
                             max_count=service.config.max_header_count)]
    if service.config.auth.enabled:
        middleware.append(Middleware(AuthMiddleware, keys=ApiKeys.from_config(service.config.auth),
                                     protect_metrics=service.config.auth.protect_metrics))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
