"""The one forwarding pipeline: from a model string to a model replica's answer.

Every endpoint, after parsing its body, goes through here:

    resolve   model string → catalog entry (one refresh on a miss; 404 / 400 / 503)
    admit     the API key's slot, when a per-key limit is set, then the model's
              concurrency slot (429 past either limit)
    handle    the cached Serve handle of that application
    wait      bounded wait for a replica to take the call (503 model_not_ready)
    answer    unary: the result, or its ErrorInfo raised as an OpenAIError;
              stream: the first item peeked (an error before output is a status,
              not an SSE event), then a ForwardedStream the endpoint frames (its
              items are Serve streaming items from the model replica)
    release   the slots, exactly once: at the end of a unary call, or when the
              stream's response closes, whatever way it closes

A client that leaves (Serve cancels the replica's request task) cancels the model
replica's call on every path: while waiting for a replica, for the unary answer, or
for a stream's first item; after that, the stream's response closes it.

Metrics (running requests, rejections, latency, tokens, TTFT, per-key counts) are
recorded here, so every endpoint is measured alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from deployments.contract import ErrorInfo, Task
from ingress.catalog import DEPLOY_ID_PREFIX, Catalog, CatalogEntry
from ingress.errors import OpenAIError, from_info
from ingress.handles import HandleCache, wait_assigned
from ingress.limits import ConcurrencyLimiter, Slot
from ingress.metrics import IngressMetrics, RequestTimer

logger = logging.getLogger("ray.serve")

# How often a waiting call re-checks whether its application failed meanwhile.
_WAIT_POLL_S = 2.0


@dataclass(slots=True)
class RequestContext:
    """What one API request has learnt so far (the app's wrapper counts the answer
    by it; `entry` is set once the model is resolved)."""

    request_id: str
    task: Task | None  # None for the routes that reach no model (/models)
    entry: CatalogEntry | None = None
    api_key: str | None = None  # the key's id (ingress/auth.py key_id); None: auth off
    background: bool = False  # a Batch API line: it yields to online requests on the replica


@dataclass(slots=True)
class ForwardedStream:
    """A model replica's stream whose first item has arrived.

    `close` is idempotent: it cancels the replica's generator unless the stream was
    read to its end (the engine request is aborted there) and releases its slots.
    """

    first: Any
    rest: AsyncIterator[Any]
    timer: RequestTimer
    _release: Callable[[], None]
    finished: bool = False
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.finished:
            cancel = getattr(self.rest, "cancel", None)
            if cancel is not None:
                cancel()
        self._release()


class Forwarder:
    """Holds what the pipeline needs: the catalog, the handles, the limits, metrics.

    Args:
        key_limit: requests in flight per API key on this replica
            (auth.max_concurrent_requests_per_key); None: no per-key limit.
    """

    def __init__(
        self,
        catalog: Catalog,
        handles: HandleCache,
        metrics: IngressMetrics,
        *,
        key_limit: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.handles = handles
        self.metrics = metrics
        self.limiter = ConcurrencyLimiter()  # by CatalogEntry.limit_key
        self.key_limit = key_limit
        self.key_limiter = ConcurrencyLimiter()  # by API key id

    # --- resolve ------------------------------------------------------------------

    async def lookup(self, model: str) -> CatalogEntry:
        """The entry `model` names, whatever it serves.

        Raises:
            OpenAIError: 404 when no application answers to `model`.
        """
        entry = await self.catalog.find(lambda: self.catalog.resolve(model))
        if entry is None:
            raise OpenAIError(
                f"The model '{model}' does not exist.", 404, param="model", code="model_not_found"
            )
        return entry

    async def resolve(self, ctx: RequestContext, model: str) -> CatalogEntry:
        """The entry for `model`, checked to serve `ctx.task` and not to have failed.

        Raises:
            OpenAIError: 404 unknown model, 400 wrong task, 503 failed application.
        """
        entry = await self.lookup(model)
        return self.accept(ctx, entry, model)

    def accept(self, ctx: RequestContext, entry: CatalogEntry, model: str) -> CatalogEntry:
        """Records a found entry on the request and checks it (task, health)."""
        ctx.entry = entry  # counted by model even when refused below
        if ctx.task not in entry.card.tasks:
            served = ", ".join(entry.card.tasks)
            raise OpenAIError(
                f"The model '{model}' serves {served}, not {ctx.task}.",
                400,
                param="model",
                code="model_task_mismatch",
            )
        failed = _failure(entry, ctx.request_id)
        if failed is not None:
            raise failed
        return entry

    # --- call ---------------------------------------------------------------------

    async def call(
        self, ctx: RequestContext, entry: CatalogEntry, method: str, payload: BaseModel
    ) -> Any:
        """One unary call to `method` of the model application.

        Returns:
            The deployment's result (never an ErrorInfo).

        Raises:
            OpenAIError: 429 at the key's or the model's limit, 503 no replica in
                time, or the error the deployment reported.
        """
        slots = self._admit(ctx, entry)
        timer = self._timer(ctx, entry)
        if ctx.background and "background" in type(payload).model_fields:
            payload = payload.model_copy(update={"background": True})
        response: Any = None
        try:
            handle = _for_adapter(await self.handles.get(entry.deploy_id, stream=False), entry)
            response = getattr(handle, method).remote(payload)
            await self._wait_for_replica(response, entry, ctx.request_id)
            result = await response
        except asyncio.CancelledError:
            # The client went away: stop the replica's work too.
            if response is not None:
                response.cancel()
            raise
        finally:
            self._release(slots, entry)
        if isinstance(result, ErrorInfo):
            raise from_info(result)
        timer.finish(getattr(result, "prompt_tokens", 0), getattr(result, "completion_tokens", 0))
        return result

    async def open_stream(
        self, ctx: RequestContext, entry: CatalogEntry, method: str, payload: BaseModel
    ) -> ForwardedStream:
        """Starts a streaming call and waits for its first item.

        Raises:
            OpenAIError: as `call`, including an ErrorInfo sent as the first item.
        """
        slots = self._admit(ctx, entry)
        timer = self._timer(ctx, entry)
        stream: Any = None
        try:
            handle = _for_adapter(await self.handles.get(entry.deploy_id, stream=True), entry)
            stream = getattr(handle, method).remote(payload)
            await self._wait_for_replica(stream, entry, ctx.request_id)
            first = await _first_item(stream)
        except BaseException:
            if stream is not None:
                stream.cancel()
            self._release(slots, entry)
            raise
        if isinstance(first, ErrorInfo):
            stream.cancel()
            self._release(slots, entry)
            raise from_info(first)
        return ForwardedStream(first, stream, timer, lambda: self._release(slots, entry))

    # --- the steps ------------------------------------------------------------------

    def _admit(self, ctx: RequestContext, entry: CatalogEntry) -> tuple[Slot, ...]:
        """Counts the request against its API key's limit, if one is set, then its
        model's (429 past either; a refusal holds no slot)."""
        tags = self.metrics.tags(entry.card.model, entry.key)
        slots: list[Slot] = []
        if ctx.api_key is not None and self.key_limit is not None:
            try:
                slots.append(self.key_limiter.acquire(ctx.api_key, self.key_limit, "this API key"))
            except OpenAIError:
                self.metrics.rejected.inc(1, {**tags, "reason": "key_concurrency_limit"})
                raise
        try:
            slots.append(
                self.limiter.acquire(
                    entry.limit_key, entry.card.max_concurrent_requests, f"'{entry.card.model}'"
                )
            )
        except OpenAIError:
            for slot in slots:
                slot.release()
            self.metrics.rejected.inc(1, {**tags, "reason": "concurrency_limit"})
            raise
        self.metrics.running.set(self.limiter.inflight(entry.limit_key), tags)
        return tuple(slots)

    def _timer(self, ctx: RequestContext, entry: CatalogEntry) -> RequestTimer:
        return RequestTimer(self.metrics, entry.card.model, entry.key, ctx.task, key=ctx.api_key)

    def _release(self, slots: tuple[Slot, ...], entry: CatalogEntry) -> None:
        for slot in slots:
            slot.release()
        self.metrics.running.set(
            self.limiter.inflight(entry.limit_key),
            self.metrics.tags(entry.card.model, entry.key),
        )

    async def _wait_for_replica(self, response: Any, entry: CatalogEntry, request_id: str) -> None:
        """Bounds the wait for a replica, and stops it early if the application fails
        to deploy meanwhile (its queued requests would otherwise wait the full bound)."""
        deadline = time.monotonic() + entry.card.wait_timeout_s
        while True:
            try:
                await wait_assigned(
                    response, min(_WAIT_POLL_S, max(0.0, deadline - time.monotonic()))
                )
                return
            except TimeoutError:
                pass
            current = self.catalog.resolve(f"{DEPLOY_ID_PREFIX}{entry.deploy_id}") or entry
            failed = _failure(current, request_id)
            if failed is not None or time.monotonic() >= deadline:
                response.cancel()
                # The catalog's reason (ingress/status.py) is built from states,
                # resource names and numbers only, so it may reach the client.
                why = current.status_message or f"status {current.status}"
                raise failed or OpenAIError(
                    f"The model '{entry.card.model}' ({entry.deploy_id}) has no replica "
                    f"ready after {entry.card.wait_timeout_s:g} s ({why}). Retry later.",
                    503,
                    code="model_not_ready",
                    retry_after=30,
                ) from None


def _for_adapter(handle: Any, entry: CatalogEntry) -> Any:
    """A LoRA adapter's calls carry its id as Serve's multiplexed model id: Serve then
    prefers a replica that has it loaded, and the replica loads it on first use."""
    if entry.adapter is None:
        return handle
    return handle.options(multiplexed_model_id=entry.adapter.model_id)


_FAILED_STATUS = {"DEPLOY_FAILED": "deploy failed", "UNHEALTHY": "no healthy replica"}


def _failure(entry: CatalogEntry, request_id: str) -> OpenAIError | None:
    """The 503 for an application that cannot serve, or None.

    Serve's status message for a failed application holds a traceback, file paths,
    pids and addresses: it goes to the log under the request id, never to the client.
    """
    if entry.status == "DEPLOY_FAILED" or (
        entry.status == "UNHEALTHY" and entry.running_replicas == 0
    ):
        logger.warning(
            "request %s: model %s (%s) is %s: %s",
            request_id,
            entry.card.model,
            entry.deploy_id,
            entry.status,
            entry.message,
        )
        return OpenAIError(
            f"The model '{entry.card.model}' is unavailable "
            f"({_FAILED_STATUS[entry.status]}); request id {request_id}.",
            503,
            code="model_unavailable",
            retry_after=30,
        )
    return None


async def _first_item(stream: AsyncIterator[Any]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        raise RuntimeError("model deployment ended the stream without output") from None


async def to_thread_if(large: bool, fn: Callable[[], str]) -> str:
    """Runs `fn` in a worker thread when its output is large (megabytes of JSON or
    base64 take milliseconds that other requests on this ingress should not wait)."""
    return await asyncio.to_thread(fn) if large else fn()
