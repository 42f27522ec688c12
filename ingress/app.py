"""The ASGI app: routes, middleware and lifespan. Where each request goes:

HeaderLimitMiddleware (431) → AuthMiddleware (401)            ingress/guards.py, auth.py
→ route → _endpoint: the one place a failure becomes a response, and each
  answer is counted                                            (below)
→ the endpoint handler: parse → convert → forward → shape      ingress/endpoints/
  (responses: the same, on the chat path; stored state        ingress/responses.py,
  in the store)                                                ingress/store.py)
→ forward: resolve → admit → handle → wait → answer → release  ingress/forward.py
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.contract import Task
from ingress.auth import ApiKeys, AuthMiddleware, api_key_id
from ingress.endpoints import Api, Handler
from ingress.endpoints.batches import cancel_batch, create_batch, get_batch, list_batches
from ingress.endpoints.chat import chat_completions
from ingress.endpoints.completions import completions
from ingress.endpoints.embeddings import embeddings
from ingress.endpoints.files import (
    create_file,
    delete_file,
    get_file,
    get_file_content,
    list_files,
)
from ingress.endpoints.images import images_generations
from ingress.endpoints.models import get_model, list_models
from ingress.endpoints.responses import (
    create_response,
    delete_response,
    get_response,
    list_input_items,
)
from ingress.errors import API_PREFIX, http_exception, serve_error
from ingress.forward import RequestContext
from ingress.guards import HeaderLimitMiddleware
from ingress.http import request_id_of
from ingress.metrics import NodeMetrics
from ingress.playground import playground_routes


def _endpoint(
    api: Api, handler: Handler, task: Task | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler: every failure becomes an OpenAI error response here, and
    every answer of a model endpoint is counted by model, task and status (and by
    API key id when auth is on)."""

    async def run(request: Request) -> Response:
        ctx = RequestContext(request_id_of(request), task, api_key=api_key_id(request.scope))
        try:
            response = await handler(api, request, ctx)
        except Exception as exc:  # OpenAIError, a failed hop, or a bug (500)
            response = serve_error(exc, ctx.request_id).response()
        if task is not None:
            metrics = api.forwarder.metrics
            entry = ctx.entry
            tags = metrics.tags(
                entry.card.model if entry else "",
                entry.deploy_id if entry else "",
                task=task,
                status=response.status_code,
            )
            metrics.requests.inc(1, tags)
            if ctx.api_key is not None:
                metrics.key_requests.inc(1, {**tags, "key": ctx.api_key})
        return response

    return run


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _metrics_text(node: NodeMetrics) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics: this node's Prometheus text, from Ray's metrics agent (the same
    numbers a Prometheus scrape of the agent's port gets), behind the API key unless
    auth.protect_metrics is off."""

    async def metrics_text(request: Request) -> Response:
        try:
            text = await node.text()
        except Exception as exc:
            return serve_error(exc, request_id_of(request)).response()
        return Response(text, media_type="text/plain; version=0.0.4")

    return metrics_text


def _batch_routes(api: Api) -> list[Route]:
    """The Batch API (ingress/endpoints/batches.py): records and reads; the work is the
    batch supervisor's (ingress/batches/)."""
    prefix = f"{API_PREFIX}/batches"
    return [
        Route(prefix, _endpoint(api, create_batch), methods=["POST"]),
        Route(prefix, _endpoint(api, list_batches), methods=["GET"]),
        Route(f"{prefix}/{{batch_id}}", _endpoint(api, get_batch), methods=["GET"]),
        Route(f"{prefix}/{{batch_id}}/cancel", _endpoint(api, cancel_batch), methods=["POST"]),
    ]


def build_asgi_app(api: Api, node_metrics: NodeMetrics | None = None) -> Starlette:
    """The Starlette app of one ingress replica, bound to its config and pipeline.

    Args:
        api: the replica's config and forwarding pipeline.
        node_metrics: what GET /metrics reads; None: this node's Ray metrics agent.
    """
    node = node_metrics or NodeMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(api.forwarder.catalog.run_refresh_loop())]
        if api.store is not None:
            tasks.append(asyncio.create_task(api.store.run_prune_loop()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            node.close()
            if api.store is not None:
                await api.store.close()

    def post(path: str, handler: Handler, task: Task) -> Route:
        return Route(f"{API_PREFIX}{path}", _endpoint(api, handler, task), methods=["POST"])

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", _metrics_text(node), methods=["GET"]),
        Route(f"{API_PREFIX}/models", _endpoint(api, list_models), methods=["GET"]),
        Route(f"{API_PREFIX}/models/{{model_id:path}}", _endpoint(api, get_model), methods=["GET"]),
        post("/chat/completions", chat_completions, "chat"),
        post("/completions", completions, "completion"),
        post("/embeddings", embeddings, "embeddings"),
        post("/images/generations", images_generations, "image"),
        post("/responses", create_response, "chat"),  # on the chat pipeline
        Route(
            f"{API_PREFIX}/responses/{{response_id}}", _endpoint(api, get_response), methods=["GET"]
        ),
        Route(
            f"{API_PREFIX}/responses/{{response_id}}",
            _endpoint(api, delete_response),
            methods=["DELETE"],
        ),
        Route(
            f"{API_PREFIX}/responses/{{response_id}}/input_items",
            _endpoint(api, list_input_items),
            methods=["GET"],
        ),
        *_batch_routes(api),
        Route(f"{API_PREFIX}/files", _endpoint(api, create_file), methods=["POST"]),
        Route(f"{API_PREFIX}/files", _endpoint(api, list_files), methods=["GET"]),
        Route(f"{API_PREFIX}/files/{{file_id}}", _endpoint(api, get_file), methods=["GET"]),
        Route(f"{API_PREFIX}/files/{{file_id}}", _endpoint(api, delete_file), methods=["DELETE"]),
        Route(
            f"{API_PREFIX}/files/{{file_id}}/content",
            _endpoint(api, get_file_content),
            methods=["GET"],
        ),
        *playground_routes(),  # GET / and /playground: the page, public (its calls carry the key)
    ]
    config = api.config
    middleware = [
        Middleware(
            HeaderLimitMiddleware,
            max_bytes=config.max_header_bytes,
            max_count=config.max_header_count,
        )
    ]
    if config.auth.enabled:
        middleware.append(
            Middleware(
                AuthMiddleware,
                keys=ApiKeys.from_config(config.auth),
                protect_metrics=config.auth.protect_metrics,
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
