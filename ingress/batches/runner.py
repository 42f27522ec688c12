"""A batch's pipeline on Ray Data: its checked requests → one output row per line.

    read_json(requests)           the rows input.py wrote: {"i", "custom_id", "body"}
    → filter                      lines a checkpoint already holds are not run again
    → map_batches(LineCaller)     each line through the online endpoint's own code
                                  (parse, bounds, resolve, forward, shape), so a batch
                                  line is exactly the request it would be online

Every operator asks for no CPU: the work is the model replicas', which hold the CPUs
(on a machine whose CPUs Serve replicas all took, a task wanting one would never run).
The callers keep at most `concurrency` lines in flight in all (the batch's share of the
model's capacity), in `actors` Ray actors, each with its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

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
CORES: dict[str, tuple[Core, Any]] = {
    "/v1/chat/completions": (chat_from_json, "chat"),
    "/v1/completions": (completions_from_json, "completion"),
    "/v1/embeddings": (embeddings_from_json, "embeddings"),
}
# Lines in flight per caller actor (more actors only for a larger share).
LINES_PER_ACTOR = 128
CALLS_PER_ACTOR = 4


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


class LineCaller:
    """Ray Data's map step: runs lines as the online endpoint does, on an Api of its
    own (catalog, handles, per-model limits) in a private event loop thread."""

    def __init__(self, config: dict[str, Any], endpoint: str, owner: str, in_flight: int) -> None:
        self.core, self.task = CORES[endpoint]
        self.owner = owner or None
        cfg = IngressConfig.model_validate(config)
        handles = HandleCache()
        catalog = Catalog(
            refresh_interval_s=cfg.catalog_refresh_s,
            miss_refresh_s=cfg.catalog_miss_refresh_s,
            on_refresh=handles.keep_only,
        )
        self.api = Api(cfg, Forwarder(catalog, handles, IngressMetrics(export=False)))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        # Shared by the actor's concurrent calls: lines of the next calls wait here
        # while the earlier ones' last lines finish.
        self.gate = asyncio.Semaphore(in_flight)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = list(zip(batch["i"], batch["custom_id"], batch["body"], strict=True))
        done = asyncio.run_coroutine_threadsafe(self._run(rows), self.loop).result()
        return {
            "i": [int(i) for i, _, _ in done],
            "ok": [ok for _, ok, _ in done],
            "line": [line for _, _, line in done],
        }

    async def _run(self, rows: list[tuple[Any, str, str]]) -> list[tuple[int, bool, str]]:
        async def one(i: Any, custom_id: str, body: str) -> tuple[int, bool, str]:
            async with self.gate:
                status, out, request_id = await self._line(body)
            line = output_line(str(custom_id), request_id, status, out)
            # ASCII JSON: a raw U+2028 or U+0085 in a model's text would end a line for
            # readers that split JSONL with str.splitlines().
            return int(i), status < 400, json.dumps(line)

        return list(await asyncio.gather(*(one(*row) for row in rows)))

    async def _line(self, body: str) -> tuple[int, Any, str]:
        request_id = f"batch-{uuid.uuid4().hex}"
        ctx = RequestContext(request_id, self.task, api_key=self.owner, background=True)
        try:
            data = json.loads(body)
            if data.get("stream"):
                raise OpenAIError(
                    "stream is not supported in a batch.", 400, param="stream", code="invalid_value"
                )
            response = await self.core(self.api, ctx, data, request_id)
            return response.status_code, json.loads(bytes(response.body)), request_id
        except Exception as exc:  # OpenAIError (a 4xx of this line), or a failed hop
            error = serve_error(exc, request_id)
            return error.status, error.body(), request_id


def pipeline(
    requests_path: str,
    filesystem: Any,
    done: set[int],
    config: dict[str, Any],
    endpoint: str,
    owner: str,
    concurrency: int,
) -> Any:
    """The batch's Ray Data dataset (lazy: it runs as the supervisor iterates it)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # a log line per update in a Serve replica
    # One caller holds a hundred lines in flight on its event loop; each more costs a
    # process start (imports: seconds) in every batch.
    actors = max(1, min(4, concurrency // LINES_PER_ACTOR))
    ds = ray.data.read_json(requests_path, filesystem=filesystem, ray_remote_args={"num_cpus": 0})
    if done:
        ds = ds.filter(lambda row: row["i"] not in done, num_cpus=0)
    in_flight = max(1, concurrency // actors)
    return ds.map_batches(
        LineCaller,
        fn_constructor_kwargs={
            "config": config,
            "endpoint": endpoint,
            "owner": owner,
            "in_flight": in_flight,
        },
        # Calls of half the gate each, CALLS_PER_ACTOR of them at once per caller: two
        # fill its gate, the others wait at it, so the replica always has `in_flight`
        # lines (one call at a time, its last lines finishing, would leave it idle).
        batch_size=max(1, in_flight // 2),
        compute=ray.data.ActorPoolStrategy(
            size=actors,
            max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
            enable_true_multi_threading=True,  # else Ray Data runs one call at a time
        ),
        num_cpus=0,
        batch_format="numpy",
    )
