"""The LLM model deployment: one vLLM engine per replica.

It speaks only the neutral contract (deployments/contract.py): GenerateRequest in,
GenerationChunk / GenerationResult / ErrorInfo out. OpenAI wire shapes are the
ingress's business; request planning (prompts, sampling, tools) is plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any

from deployments.contract import (
    AdapterSpec,
    ChoiceDelta,
    ErrorInfo,
    GenerateRequest,
    GenerationChunk,
    GenerationResult,
)
from deployments.engines import AdapterRef, EngineStep, LLMEngine, LLMEngineClass
from deployments.errors import InvalidAdapter, engine_error, planning_error
from deployments.llm.adapters import AdapterSet, adapters_of
from deployments.llm.config import LLMAppConfig
from deployments.llm.online_first import OnlineFirst
from deployments.llm.plan import ChoiceAssembler, Plan, build_plan
from deployments.llm.vllm_engine import VLLMEngine
from deployments.server_base import ModelServer

logger = logging.getLogger("ray.serve")


class LLMServer(ModelServer[LLMAppConfig, LLMEngine]):
    """Serve deployment class; the builder wraps it with serve.deployment."""

    config_cls = LLMAppConfig

    async def __init__(  # type: ignore[misc]  # Serve awaits it (server_base.py)
        self, config: dict[str, Any], *, engine_cls: LLMEngineClass = VLLMEngine
    ) -> None:
        """Starts the engine (see ModelServer), then its tool parser and stats.

        Args:
            config: the application's LLMAppConfig as JSON.
            engine_cls: the engine class; tests pass a typed fake.
        """
        await super().__init__(config, engine_cls=engine_cls)
        # Chat templates and tokenizers run here, off the event loop: a 1 MB prompt
        # takes ~2 s to tokenise, which would stall every stream of this replica.
        # Half the cores (as vLLM sizes its grammar-compile pool), so that planning
        # huge prompts cannot starve the engine and the streams of CPU either.
        self._planner = ThreadPoolExecutor(
            max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="llm-plan"
        )
        self._tool_parser = (
            self._engine.tool_parser(self._config.tool_call_parser)
            if self._config.tool_call_parser
            else None
        )
        engine_kwargs = self._config.engine.engine_kwargs
        self._adapters = AdapterSet(
            self._engine,
            enabled=bool(engine_kwargs.get("enable_lora")),
            capacity=int(engine_kwargs.get("max_cpu_loras") or engine_kwargs.get("max_loras") or 1),
        )
        self._stats_task = asyncio.get_running_loop().create_task(self._publish_stats())
        # Generations running on this replica: chunks are held (stream_interval_ms)
        # only while there are at least `stream_hold_min_streams` of them.
        self._active = 0
        # Batch lines wait before the engine while online requests run (online_first.py).
        self._online_first = OnlineFirst(self._config.background_while_online)

    async def _publish_stats(self, period_s: float = 0.5) -> None:
        """Exports, per replica, the engine's own count of requests it holds (running
        or waiting: aborts on disconnect are seen in Prometheus, not inferred) and its
        prefix cache's lookups and hits in tokens (what a router's affinity buys)."""
        try:
            from ray import serve
            from ray.util.metrics import Counter, Gauge

            context = serve.get_replica_context()
        except Exception:  # not inside a Serve replica (unit tests)
            return
        gauge = Gauge(
            "openai_serve_engine_unfinished_requests",
            "Requests the engine holds (running or waiting).",
            tag_keys=("model", "deploy_id"),
        )
        cache_tags = ("model", "deploy_id", "replica")
        queries = Counter(
            "openai_serve_prefix_cache_queries",
            "Prompt tokens looked up in the engine's prefix cache, per replica.",
            tag_keys=cache_tags,
        )
        hits = Counter(
            "openai_serve_prefix_cache_hits",
            "Prompt tokens found in the engine's prefix cache, per replica.",
            tag_keys=cache_tags,
        )
        tags = {"model": self._config.model, "deploy_id": context.app_name}
        replica_tags = {**tags, "replica": context.replica_id.unique_id}
        published = {"queries": 0, "hits": 0}
        while True:
            gauge.set(self._engine.num_unfinished_requests(), tags)
            counts = self._engine.prefix_cache_counts()
            for name, counter in (("queries", queries), ("hits", hits)):
                if counts[name] > published[name]:
                    counter.inc(counts[name] - published[name], replica_tags)
                    published[name] = counts[name]
            await asyncio.sleep(period_s)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve applies a new user_config in place: the adapters it lists (the card
        beside them is the ingress's business)."""
        await self._adapters.reconfigure(adapters_of(user_config))

    def stats(self) -> dict[str, Any]:
        """Engine-side counts, for tests and metrics: requests still in the engine,
        its prefix cache's lookups and hits (tokens), adapter loads by version, and
        which replica and engine answered."""
        try:
            from ray import serve

            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # not inside a Serve replica (unit tests)
            replica = ""
        return {
            "unfinished_requests": self._engine.num_unfinished_requests(),
            "prefix_cache": self._engine.prefix_cache_counts(),
            "adapter_loads": dict(self._adapters.loads),
            "replica": replica,
            "engine": id(self._engine),
        }

    def __del__(self) -> None:
        task = getattr(self, "_stats_task", None)
        if task is not None:
            task.cancel()
        planner = getattr(self, "_planner", None)
        if planner is not None:
            planner.shutdown(wait=False, cancel_futures=True)
        super().__del__()

    # Requests -------------------------------------------------------------------

    async def generate(
        self, request: GenerateRequest
    ) -> AsyncGenerator[GenerationChunk | ErrorInfo, None]:
        """Streams a generation; see contract.LLMDeployment.generate."""
        spec = request.adapter
        if spec is None:
            async with aclosing(self._generate(request, None)) as items:
                async for item in items:
                    yield item
            return
        try:
            adapter = await self._adapters.acquire(spec)
        except InvalidAdapter as exc:
            yield self._adapter_unavailable(spec, exc, request.request_id)
            return
        try:
            async with aclosing(self._generate(request, adapter)) as items:
                async for item in items:
                    yield item
        finally:
            await asyncio.shield(self._adapters.release(spec))

    def _adapter_unavailable(
        self, spec: AdapterSpec, exc: InvalidAdapter, request_id: str
    ) -> ErrorInfo:
        # The reason is ours (InvalidAdapter's messages name no path); the detail is in
        # the replica log. The base model and the other adapters keep serving.
        return ErrorInfo(
            f"The model '{self._config.model}:{spec.version}' (a LoRA adapter) cannot be "
            f"loaded: {exc}; request id {request_id}.",
            kind="unavailable",
            code="adapter_unavailable",
        )

    async def _generate(
        self, request: GenerateRequest, adapter: AdapterRef | None
    ) -> AsyncGenerator[GenerationChunk | ErrorInfo, None]:
        try:
            # Cancelled meanwhile (the client left), the thread finishes its plan and
            # it is dropped: no engine request exists yet, so there is nothing to abort.
            plan = await asyncio.get_running_loop().run_in_executor(
                self._planner,
                build_plan,
                self._engine,
                request,
                self._tool_parser,
                self._config.limits,
            )
        except Exception as exc:
            yield planning_error(
                exc,
                request.request_id,
                is_client_error=self._engine.is_client_error,
                prompt_param="messages" if request.task == "chat" else "prompt",
            )
            return
        interval = self._config.stream_interval_ms / 1000.0
        # Batch lines are admitted by complete(); every other request counts as online.
        online = (
            contextlib.nullcontext() if request.background else self._online_first.online_request()
        )
        async with online, aclosing(self._run_plan(plan, request, adapter, interval)) as items:
            async for item in items:
                yield item

    async def _run_plan(
        self,
        plan: Plan,
        request: GenerateRequest,
        adapter: AdapterRef | None,
        interval: float,
    ) -> AsyncGenerator[GenerationChunk | ErrorInfo, None]:
        assemblers = [ChoiceAssembler(plan, p) for p in range(len(plan.prompts))]
        completion_tokens = 0
        pending = len(plan.prompts)
        self._active += 1
        try:
            # aclosing: leaving early (client gone, engine failure) closes the merge
            # now, which cancels its per-prompt tasks, instead of at garbage collection.
            async with aclosing(_merge(self._engine, plan, request.request_id, adapter)) as steps:
                async for p, out in steps:
                    deltas: list[ChoiceDelta] = []
                    if out is None:  # prompt p is done
                        pending -= 1
                    else:
                        _raise_on_engine_failure(out, request.request_id)
                        completion_tokens += sum(len(o.token_ids) for o in out.outputs)
                        deltas = assemblers[p].step(out)
                    if deltas or pending == 0:
                        yield GenerationChunk(
                            deltas, plan.prompt_tokens, completion_tokens, finished=pending == 0
                        )
                        if interval and pending and self._hold_chunks():
                            # Each chunk costs two Serve hops (model replica → ingress
                            # → proxy) whatever it holds. While we
                            # wait, vLLM's per-request collector merges the engine's new
                            # deltas, so the next pull returns them as one output; a
                            # stream slower than the interval finds nothing waiting.
                            await asyncio.sleep(interval)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: vLLM's generate aborts on cancel already; abort
            # again by id so no engine step is spent on nobody, then let the
            # cancellation finish.
            for p in range(len(plan.prompts)):
                await asyncio.shield(
                    self._engine.abort(plan.engine_request_id(request.request_id, p))
                )
            raise
        except Exception as exc:
            yield engine_error(
                exc, request.request_id, is_client_error=self._engine.is_client_error
            )
        finally:
            self._active -= 1

    def _hold_chunks(self) -> bool:
        """Whether to coalesce: only under load. A lightly loaded replica has the CPU
        to send every engine step at once (no added inter-token latency); a busy
        one would spend it on per-chunk hops that the engine needs."""
        return self._active >= self._config.stream_hold_min_streams

    async def complete(self, request: GenerateRequest) -> GenerationResult | ErrorInfo:
        """Runs a generation to the end; see contract.LLMDeployment.complete. A batch
        line (`background`) waits for online requests first and, evicted by one, runs
        again from the start (online_first.py)."""
        if not request.background:
            return await self._complete(request)
        while True:
            async with self._online_first.background_request() as evicted:
                run = asyncio.ensure_future(self._complete(request))
                notice = asyncio.ensure_future(evicted.wait())
                try:
                    await asyncio.wait({run, notice}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    notice.cancel()
                    if not run.done():
                        run.cancel()  # evicted, or our caller left: aborts the engine requests
                        await asyncio.gather(run, return_exceptions=True)
                if not run.cancelled():
                    return run.result()

    async def _complete(self, request: GenerateRequest) -> GenerationResult | ErrorInfo:
        merged: dict[int, ChoiceDelta] = {}
        last: GenerationChunk | None = None
        async with aclosing(self.generate(request)) as items:
            async for item in items:
                if isinstance(item, ErrorInfo):
                    return item
                last = item
                for d in item.deltas:
                    merge_delta(merged.setdefault(d.index, ChoiceDelta(d.index, "")), d)
        return GenerationResult(
            choices=[merged[i] for i in sorted(merged)],
            prompt_tokens=last.prompt_tokens if last else 0,
            completion_tokens=last.completion_tokens if last else 0,
        )


class EngineRequestFailed(Exception):
    """The engine ended a request with finish_reason "error": it failed that request
    alone (in vLLM, e.g. a guided-decoding grammar that did not compile) and holds it
    no longer. Ours, not the caller's: reported as an internal error."""


def _raise_on_engine_failure(out: EngineStep, request_id: str) -> None:
    if any(o.finish_reason == "error" for o in out.outputs):
        raise EngineRequestFailed(f"the engine failed request {request_id} (finish_reason 'error')")


def merge_delta(into: ChoiceDelta, delta: ChoiceDelta) -> None:
    """Appends one streamed delta of a choice to its whole output so far."""
    into.text += delta.text
    into.finish_reason = delta.finish_reason or into.finish_reason
    if delta.logprobs is not None:
        into.logprobs = (into.logprobs or []) + delta.logprobs
    if delta.tool_calls:
        into.tool_calls = (into.tool_calls or []) + delta.tool_calls


async def _merge(
    engine: LLMEngine, plan: Plan, request_id: str, adapter: AdapterRef | None = None
) -> AsyncGenerator[tuple[int, EngineStep | None], None]:
    """Runs every prompt's engine request and yields (prompt index, engine step),
    then (prompt index, None) when that prompt is done. One prompt: no tasks."""

    def stream(p: int) -> aclosing[AsyncGenerator[EngineStep, None]]:
        # Closed on the way out, so the engine frees the request at once (vLLM's
        # generate aborts when closed) rather than whenever it is garbage collected.
        return aclosing(
            engine.stream(
                plan.prompts[p], plan.params, plan.engine_request_id(request_id, p), adapter
            )
        )

    if len(plan.prompts) == 1:
        async with stream(0) as steps:
            async for out in steps:
                yield 0, out
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, EngineStep | BaseException | None]] = asyncio.Queue()

    async def pump(p: int) -> None:
        try:
            async with stream(p) as steps:
                async for out in steps:
                    await queue.put((p, out))
            await queue.put((p, None))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((p, exc))

    tasks = [asyncio.create_task(pump(p)) for p in range(len(plan.prompts))]
    try:
        for _ in range(len(tasks)):
            while True:
                p, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield p, item
                if item is None:
                    break
    finally:
        for task in tasks:  # cancelling a pump aborts its engine request
            task.cancel()
