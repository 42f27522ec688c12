"""The batch callers: long-lived Ray actors that run batch lines exactly as the online
endpoints run requests (parse, bounds, resolve, forward through the model's Serve
handle, shape).

A supervisor starts its callers on its first batch and keeps them for the next ones
(they die with it, their owner), so a batch does not pay a process start, the ingress
imports and an `Api` (about 2 s here, a quarter of a 1,000-line tiny batch). Ray Data's
map step (runner.py) sends each caller blocks of lines; every line of one batch run on
one caller waits at that run's gate, `in_flight` wide (the batch's share of the model),
so the blocks queued behind keep the engine fed while the earlier ones' last lines end.
`cancel(key)` stops a run's lines where they are: their handle calls are cancelled, so
the model replicas abort them (a cancelled or expired batch leaves no work behind).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from deployments.contract import Task
from ingress.catalog import Catalog
from ingress.config import IngressConfig
from ingress.endpoints import Api
from ingress.endpoints.chat import chat_from_json
from ingress.endpoints.completions import completions_from_json
from ingress.endpoints.embeddings import embeddings_from_json
from ingress.errors import OpenAIError, serve_error
from ingress.forward import Forwarder, RequestContext
from ingress.handles import HandleCache
from ingress.metrics import IngressMetrics

Core = Callable[[Api, RequestContext, dict[str, Any], str], Awaitable[Response]]
CORES: dict[str, tuple[Core, Task]] = {
    "/v1/chat/completions": (chat_from_json, "chat"),
    "/v1/completions": (completions_from_json, "completion"),
    "/v1/embeddings": (embeddings_from_json, "embeddings"),
}
_REMEMBERED = 1024  # cancelled run keys a caller remembers (a late block is refused)


def output_line(custom_id: str, request_id: str, status: int, body: Any) -> dict[str, Any]:
    """One line of the output or error file, in OpenAI's format."""
    error = None
    if status >= 400:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        error = {"code": err.get("code") or str(status), "message": err.get("message", "")}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": error,
    }


class _Run:
    """One batch run on this caller: its gate and the calls working for it."""

    def __init__(self, in_flight: int) -> None:
        self.gate = asyncio.Semaphore(in_flight)
        self.calls: set[asyncio.Task[Any]] = set()


class LineCaller:
    """An async Ray actor (supervisor.py starts it with `ray.remote`): an Api of its own
    (catalog, handles, per-model limits), shared by every batch it serves."""

    def __init__(self, config: dict[str, Any]) -> None:
        cfg = IngressConfig.model_validate(config)
        handles = HandleCache()
        catalog = Catalog(
            refresh_interval_s=cfg.catalog_refresh_s,
            miss_refresh_s=cfg.catalog_miss_refresh_s,
            on_refresh=handles.keep_only,
        )
        self.api = Api(cfg, Forwarder(catalog, handles, IngressMetrics(export=False)))
        self.runs: dict[str, _Run] = {}
        self.cancelled: OrderedDict[str, None] = OrderedDict()

    async def run(
        self, key: str, endpoint: str, owner: str, in_flight: int, block: dict[str, Any]
    ) -> dict[str, list[Any]]:
        """Runs a block of lines of the run `key`; one output row per line, or none
        once the run is cancelled."""
        if key in self.cancelled:
            return {"i": [], "ok": [], "line": []}
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = _Run(in_flight)
        task = asyncio.ensure_future(self._block(run, endpoint, owner, block))
        run.calls.add(task)
        try:
            done = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this call itself was cancelled, not the run
            return {"i": [], "ok": [], "line": []}
        finally:
            run.calls.discard(task)
            if not run.calls and self.runs.get(key) is run:
                del self.runs[key]  # a gate nobody holds: the next block makes a new one
        return {
            "i": [i for i, _, _ in done],
            "ok": [ok for _, ok, _ in done],
            "line": [line for _, _, line in done],
        }

    def cancel(self, key: str) -> int:
        """Stops the run's lines (their handle calls cancelled: the replicas abort
        them) and refuses its later blocks. Returns the blocks stopped."""
        self.cancelled[key] = None
        while len(self.cancelled) > _REMEMBERED:
            self.cancelled.popitem(last=False)
        run = self.runs.pop(key, None)
        calls = list(run.calls) if run else []
        for task in calls:
            task.cancel()
        return len(calls)

    async def _block(
        self, run: _Run, endpoint: str, owner: str, block: dict[str, Any]
    ) -> list[tuple[int, bool, str]]:
        core, kind = CORES[endpoint]
        rows = zip(block["i"], block["custom_id"], block["body"], strict=True)

        async def one(i: Any, custom_id: Any, body: Any) -> tuple[int, bool, str]:
            async with run.gate:
                status, out, request_id = await self._line(core, kind, owner, str(body))
            line = output_line(str(custom_id), request_id, status, out)
            # ASCII JSON: a raw U+2028 or U+0085 in a model's text would end a line for
            # readers that split JSONL with str.splitlines().
            return int(i), status < 400, json.dumps(line)

        return list(await asyncio.gather(*(one(*row) for row in rows)))

    async def _line(self, core: Core, kind: Task, owner: str, body: str) -> tuple[int, Any, str]:
        request_id = f"batch-{uuid.uuid4().hex}"
        ctx = RequestContext(request_id, kind, api_key=owner or None, background=True)
        try:
            data = json.loads(body)
            if data.get("stream"):
                raise OpenAIError(
                    "stream is not supported in a batch.", 400, param="stream", code="invalid_value"
                )
            response = await core(self.api, ctx, data, request_id)
            return response.status_code, json.loads(bytes(response.body)), request_id
        except Exception as exc:  # OpenAIError (a 4xx of this line), or a failed hop
            error = serve_error(exc, request_id)
            return error.status, error.body(), request_id
