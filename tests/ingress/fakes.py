"""Typed fakes of what the ingress talks to (Serve handles, the controller), so its tests run without Ray."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette

from deployments.contract import (
    MODEL_CARD_KEY,
    ChoiceDelta,
    EmbeddingResult,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    GenerationResult,
    ImageRequest,
    ImageResult,
)
from ingress.app import build_asgi_app
from ingress.blobs import Blobs
from ingress.catalog import Catalog
from ingress.config import IngressConfig
from ingress.endpoints import Api
from ingress.forward import Forwarder
from ingress.handles import HandleCache
from ingress.metrics import IngressMetrics, NodeMetrics
from ingress.store import Store

API = "/v1/openai"


class RequestCancelled(Exception):
    """What a Serve response raises when read after `.cancel()` (Ray's RequestCancelledError)."""


# --- Serve responses ---------------------------------------------------------------


class FakeResponse:
    """A unary DeploymentResponse: awaiting it gives `reply` (raised if an exception).

    Args:
        assigned: False models an application with no replica: `_fetch_future_result_async`
            (what ingress/handles.py `wait_assigned` awaits) never returns until cancel.
        answers: False holds the answer back until `answer()` or `cancel()`.
    """

    def __init__(self, reply: Any, *, assigned: bool = True, answers: bool = True) -> None:
        self.reply = reply
        self.cancelled = False
        self._assigned = asyncio.Event()
        self._answered = asyncio.Event()
        if assigned:
            self._assigned.set()
        if answers:
            self._answered.set()

    async def _fetch_future_result_async(self) -> None:
        await self._assigned.wait()

    def answer(self) -> None:
        self._answered.set()

    def cancel(self) -> None:
        self.cancelled = True
        self._assigned.set()
        self._answered.set()

    async def _result(self) -> Any:
        await self._answered.wait()
        if self.cancelled:
            raise RequestCancelled
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()


class FakeStream:
    """A streaming DeploymentResponseGenerator over `items` (an exception item is raised).

    Args:
        assigned: as FakeResponse.
        then_hang: after the last item, wait (as a slow engine does) until `cancel()`.
    """

    def __init__(
        self, items: Iterable[Any], *, assigned: bool = True, then_hang: bool = False
    ) -> None:
        self._items = list(items)
        self._then_hang = then_hang
        self.cancelled = False
        self.yielded = 0
        self._assigned = asyncio.Event()
        self._woken = asyncio.Event()
        if assigned:
            self._assigned.set()

    async def _fetch_future_result_async(self) -> None:
        await self._assigned.wait()

    def cancel(self) -> None:
        self.cancelled = True
        self._assigned.set()
        self._woken.set()

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        if self.cancelled:
            raise RequestCancelled
        if self._items:
            item = self._items.pop(0)
            self.yielded += 1
            if isinstance(item, BaseException):
                raise item
            return item
        if self._then_hang:
            await self._woken.wait()
            raise RequestCancelled
        raise StopAsyncIteration


# --- Serve applications and handles --------------------------------------------------

# payload → reply (unary: a value, an ErrorInfo or an exception; stream: the items)
Behaviour = Callable[[Any], Any]


@dataclass
class Call:
    method: str
    payload: Any
    stream: bool
    response: FakeResponse | FakeStream
    model_id: str | None = None  # the handle's multiplexed_model_id


class FakeApplication:
    """A Serve application as `serve.get_app_handle` returns it.

    `.options(stream=...)` gives a handle whose `.METHOD.remote(payload)` returns a
    FakeResponse (unary) or a FakeStream, built from `unary[METHOD]` or
    `streams[METHOD]`; every call is recorded in `calls`.
    """

    def __init__(
        self,
        *,
        unary: dict[str, Behaviour] | None = None,
        streams: dict[str, Behaviour] | None = None,
        assigned: bool = True,
        answers: bool = True,
        then_hang: bool = False,
    ) -> None:
        self.unary = dict(unary or {})
        self.streams = dict(streams or {})
        self.assigned = assigned
        self.answers = answers
        self.then_hang = then_hang
        self.calls: list[Call] = []
        self.options_calls: list[bool] = []

    def options(self, *, stream: bool) -> FakeHandle:
        self.options_calls.append(stream)
        return FakeHandle(self, stream)

    def remote(
        self, method: str, payload: Any, stream: bool, model_id: str | None = None
    ) -> FakeResponse | FakeStream:
        response: FakeResponse | FakeStream
        if stream:
            response = FakeStream(
                self.streams[method](payload), assigned=self.assigned, then_hang=self.then_hang
            )
        else:
            response = FakeResponse(
                self.unary[method](payload), assigned=self.assigned, answers=self.answers
            )
        self.calls.append(Call(method, payload, stream, response, model_id))
        return response

    @property
    def last(self) -> Any:
        """The response of the latest call (typed Any: tests read either kind)."""
        return self.calls[-1].response


@dataclass(frozen=True)
class FakeMethod:
    app: FakeApplication
    name: str
    stream: bool
    model_id: str | None = None

    def remote(self, payload: Any) -> FakeResponse | FakeStream:
        return self.app.remote(self.name, payload, self.stream, self.model_id)


class FakeHandle:
    def __init__(self, app: FakeApplication, stream: bool, model_id: str | None = None) -> None:
        self._app = app
        self._stream = stream
        self._model_id = model_id

    def options(self, *, multiplexed_model_id: str) -> FakeHandle:
        return FakeHandle(self._app, self._stream, multiplexed_model_id)

    def __getattr__(self, name: str) -> FakeMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return FakeMethod(self._app, name, self._stream, self._model_id)


class FakeServe:
    """`serve.get_app_handle` over a dict of applications; records each lookup."""

    def __init__(self, apps: dict[str, FakeApplication] | None = None) -> None:
        self.apps = dict(apps or {})
        self.lookups: list[str] = []

    def get_app_handle(self, name: str) -> FakeApplication:
        self.lookups.append(name)
        if name not in self.apps:
            raise KeyError(f"Application '{name}' does not exist.")
        return self.apps[name]


# --- The controller ------------------------------------------------------------------


def app_details(
    model: str,
    version: str = "1",
    tasks: Iterable[str] = ("chat", "completion"),
    *,
    status: str = "RUNNING",
    running: int = 1,
    message: str = "",
    **card: Any,
) -> dict[str, Any]:
    """One application as the controller's details hold it, publishing a ModelCard."""
    model_card = {"model": model, "version": version, "tasks": list(tasks), **card}
    return {
        "status": status,
        "message": message,
        "deployments": {
            "Model": {
                "deployment_config": {"user_config": {MODEL_CARD_KEY: model_card}},
                "replicas": [{"state": "RUNNING"}] * running,
                "target_num_replicas": max(1, running),
            }
        },
    }


class FakeController:
    """The controller's application details, as `Catalog(fetch=...)` reads them."""

    def __init__(self, apps: dict[str, dict[str, Any]] | None = None, delay_s: float = 0.0) -> None:
        self.apps = dict(apps or {})
        self.delay_s = delay_s
        self.fetches = 0

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return {"applications": dict(self.apps)}


# --- Model behaviours ----------------------------------------------------------------


# A chat request as the ingress forwards it (the payload of a generate call).
CHAT_PAYLOAD = GenerateRequest(
    request_id="R-1", task="chat", messages=[{"role": "user", "content": "hi"}]
)


def chunks(text: str = "Hello", prompt_tokens: int = 5) -> list[GenerationChunk]:
    """A stream of one token per character, the last chunk finished with 'stop'."""
    out = []
    for i, ch in enumerate(text):
        last = i == len(text) - 1
        out.append(
            GenerationChunk(
                deltas=[ChoiceDelta(index=0, text=ch, finish_reason="stop" if last else None)],
                prompt_tokens=prompt_tokens,
                completion_tokens=i + 1,
                finished=last,
            )
        )
    return out


def llm_app(text: str = "Hello", **kw: Any) -> FakeApplication:
    """An LLM application: `complete` answers `text` per choice, `generate` streams it."""

    def complete(req: GenerateRequest) -> GenerationResult:
        n = req.sampling.n * max(1, len(req.prompts))
        return GenerationResult(
            choices=[ChoiceDelta(index=i, text=text, finish_reason="stop") for i in range(n)],
            prompt_tokens=5,
            completion_tokens=len(text) * n,
        )

    return FakeApplication(
        unary={"complete": complete}, streams={"generate": lambda req: chunks(text)}, **kw
    )


def vector_bytes(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def embeddings_app(**kw: Any) -> FakeApplication:
    """An embeddings application: input i gets the vector [i, 0.5]."""

    def embed(req: EmbedRequest) -> EmbeddingResult:
        return EmbeddingResult(
            vectors=[vector_bytes(i, 0.5) for i in range(len(req.inputs))],
            prompt_tokens=3 * len(req.inputs),
        )

    return FakeApplication(unary={"embed": embed}, **kw)


def image_app(**kw: Any) -> FakeApplication:
    """An image application: image i is the bytes b'image-i'."""

    def generate(req: ImageRequest) -> ImageResult:
        return ImageResult(
            images=[f"image-{i}".encode() for i in range(req.n)],
            output_format=req.output_format,
            width=req.width,
            height=req.height,
        )

    return FakeApplication(unary={"generate": generate}, **kw)


# --- Metrics -------------------------------------------------------------------------


@dataclass
class RecordingInstrument:
    """An Instrument (ingress/metrics.py) that keeps every (value, tags) it is given."""

    records: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.records.append((value, dict(tags or {})))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.records.append((value, dict(tags or {})))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.records.append((value, dict(tags or {})))


def recording_metrics() -> tuple[IngressMetrics, RecordingInstrument, RecordingInstrument]:
    """Unexported metrics whose request and rejection counters record."""
    metrics = IngressMetrics(export=False)
    requests, rejected = RecordingInstrument(), RecordingInstrument()
    metrics.requests = requests
    metrics.rejected = rejected
    return metrics, requests, rejected


# --- The whole ingress over fakes ----------------------------------------------------


@dataclass
class Stack:
    """The real ingress app and pipeline, over a fake controller and fake Serve."""

    config: IngressConfig
    controller: FakeController
    serve: FakeServe
    handles: HandleCache
    catalog: Catalog
    forwarder: Forwarder
    app: Starlette

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        """An HTTP client on the app (no lifespan: the catalog refreshes on a miss)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://ingress", headers=headers
        )

    def inflight(self, deploy_id: str) -> int:
        return self.forwarder.limiter.inflight(deploy_id)


def make_stack(
    details: dict[str, dict[str, Any]] | None = None,
    apps: dict[str, FakeApplication] | None = None,
    *,
    config: dict[str, Any] | None = None,
    metrics: IngressMetrics | None = None,
    node_metrics: NodeMetrics | None = None,
    store: Store | None = None,
    blobs: Blobs | None = None,
) -> Stack:
    """Builds the app exactly as ingress/deployment.py does, with fakes injected.

    Auth is off unless `config` says otherwise; GET /metrics answers `node_metrics`
    (by default a fixed text, never a Ray node); `store`: the state store of the
    Responses endpoints (None: none, as an app without them); `blobs`: the blob store
    of the Files endpoints (with `store`)."""
    cfg = IngressConfig.model_validate({"auth": {"enabled": False}, **(config or {})})
    controller = FakeController(details)
    serve = FakeServe(apps)
    handles = HandleCache(get_app_handle=serve.get_app_handle)
    catalog = Catalog(
        fetch=controller,
        refresh_interval_s=cfg.catalog_refresh_s,
        miss_refresh_s=cfg.catalog_miss_refresh_s,
        on_refresh=handles.keep_only,
    )
    forwarder = Forwarder(
        catalog,
        handles,
        metrics or IngressMetrics(export=False),
        key_limit=cfg.auth.max_concurrent_requests_per_key,
    )
    node = node_metrics or NodeMetrics(lambda: "http://node/metrics", lambda url, t: "ray_up 1\n")
    app = build_asgi_app(Api(cfg, forwarder, store, blobs), node)
    return Stack(cfg, controller, serve, handles, catalog, forwarder, app)


def standard_stack(**kw: Any) -> Stack:
    """One LLM ('org/llm', app llm-1), one embeddings ('org/emb', emb-1) and one image
    model ('org/img', img-1)."""
    details = {
        "llm-1": app_details("org/llm", "1", ("chat", "completion")),
        "emb-1": app_details("org/emb", "1", ("embeddings",)),
        "img-1": app_details("org/img", "1", ("image",)),
    }
    apps = {"llm-1": llm_app(), "emb-1": embeddings_app(), "img-1": image_app()}
    return make_stack(details, apps, **kw)


# --- Assertions ----------------------------------------------------------------------


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The `error` object of an OpenAI error response, checked for the exact shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    return check_error_body(body)


def check_error_body(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    return error  # type: ignore[no-any-return]


def sse_events(text: str) -> list[Any]:
    """The data of each SSE frame, JSON-decoded, with the literal [DONE] kept as a str."""
    assert text.endswith("\n\n")
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[6:] if f == "data: [DONE]" else json.loads(f[6:]) for f in frames]
