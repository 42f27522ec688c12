"""The LLM model deployment: one vLLM engine per replica.

It speaks only the neutral contract (deployments/contract.py): GenerateRequest in,
GenerationChunk / GenerationResult / ErrorInfo out. OpenAI wire shapes are the
ingress's business; request planning (prompts, sampling, tools) is plan.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from deployments.contract import (
    ChoiceDelta,
    ErrorInfo,
    GenerateRequest,
    GenerationChunk,
    GenerationResult,
)
from deployments.llm.config import LLMAppConfig
from deployments.llm.plan import ChoiceAssembler, Plan, build_plan
from deployments.llm.vllm_engine import PromptTooLong, VLLMEngine, is_client_error
from deployments.models.sources import resolve_model_source

logger = logging.getLogger("ray.serve")


class LLMServer:
    """Serve deployment class; the builder wraps it with serve.deployment."""

    async def __init__(self, config: dict[str, Any], *, engine_cls: type = VLLMEngine):
        self._config = LLMAppConfig.model_validate(config)
        engine_config = self._config.engine
        if engine_config.served_model_name is None:
            engine_config = engine_config.model_copy(
                update={"served_model_name": self._config.model}
            )
        # Preparing a packaged model (Gemma from its GGUF) can take minutes and lots
        # of RAM; run it off the event loop so the replica stays responsive.
        model_path = await asyncio.to_thread(
            resolve_model_source, self._config.model_source
        )
        self._engine = engine_cls(engine_config, str(model_path))
        await asyncio.wait_for(self._engine.start(), engine_config.start_timeout_s)
        self._tool_parser = (self._engine.tool_parser(self._config.tool_call_parser)
                             if self._config.tool_call_parser else None)
        self._stats_task = asyncio.get_running_loop().create_task(self._publish_stats())

    async def _publish_stats(self, period_s: float = 0.5) -> None:
        """Exports the engine's own count of requests it holds (running or waiting),
        so aborts on disconnect can be seen from Prometheus, not just inferred."""
        try:
            from ray import serve
            from ray.util.metrics import Gauge

            app = serve.get_replica_context().app_name
        except Exception:  # not inside a Serve replica (unit tests)
            return
        gauge = Gauge("openai_serve_engine_unfinished_requests",
                      "Requests the engine holds (running or waiting).",
                      tag_keys=("model", "deploy_id"))
        tags = {"model": self._config.model, "deploy_id": app}
        while True:
            gauge.set(self._engine.num_unfinished_requests(), tags)
            await asyncio.sleep(period_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve hands us the model card we published; the ingress reads it from the
        controller, so there is nothing to apply here."""

    async def check_health(self) -> None:
        await self._engine.check_health()

    def stats(self) -> dict[str, int]:
        """Engine-side counts, for tests and metrics: requests still in the engine."""
        return {"unfinished_requests": self._engine.num_unfinished_requests()}

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: stop the engine core processes so
        # nothing outlives `serve shutdown`.
        task = getattr(self, "_stats_task", None)
        if task is not None:
            task.cancel()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()

    # Requests -------------------------------------------------------------------

    async def generate(
        self, request: GenerateRequest
    ) -> AsyncIterator[GenerationChunk | ErrorInfo]:
        try:
            plan = build_plan(self._engine, request, self._tool_parser)
        except PromptTooLong as exc:
            yield ErrorInfo(str(exc), param="messages" if request.kind == "chat"
                            else "prompt", code="context_length_exceeded")
            return
        except Exception as exc:
            yield _planning_error(exc, request.request_id)
            return
        assemblers = [ChoiceAssembler(plan, p) for p in range(len(plan.prompts))]
        completion_tokens = 0
        pending = len(plan.prompts)
        interval = self._config.stream_interval_ms / 1000.0
        try:
            async for p, out in _merge(self._engine, plan, request.request_id):
                deltas: list[ChoiceDelta] = []
                if out is None:  # prompt p is done
                    pending -= 1
                else:
                    completion_tokens += sum(len(o.token_ids) for o in out.outputs)
                    deltas = assemblers[p].step(out)
                if deltas or pending == 0:
                    yield GenerationChunk(deltas, plan.prompt_tokens, completion_tokens,
                                          finished=pending == 0)
                    if interval and pending:
                        # Each chunk costs two Ray hops whatever it holds. While we
                        # wait, vLLM's per-request collector merges the engine's new
                        # deltas, so the next pull returns them as one output; a
                        # stream slower than the interval finds nothing waiting.
                        await asyncio.sleep(interval)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: vLLM's generate aborts on cancel already; abort
            # again by id so no engine step is spent on nobody, then let the
            # cancellation finish.
            for p in range(len(plan.prompts)):
                await asyncio.shield(self._engine.abort(plan.engine_request_id(request.request_id, p)))
            raise
        except Exception as exc:
            yield _engine_error(exc, request.request_id)

    async def complete(self, request: GenerateRequest) -> GenerationResult | ErrorInfo:
        merged: dict[int, ChoiceDelta] = {}
        last: GenerationChunk | None = None
        async for item in self.generate(request):
            if isinstance(item, ErrorInfo):
                return item
            last = item
            for d in item.deltas:
                into = merged.setdefault(d.index, ChoiceDelta(d.index, "", 0))
                into.text += d.text
                into.num_tokens += d.num_tokens
                into.finish_reason = d.finish_reason or into.finish_reason
                if d.logprobs is not None:
                    into.logprobs = (into.logprobs or []) + d.logprobs
                if d.tool_calls:
                    into.tool_calls = (into.tool_calls or []) + d.tool_calls
        return GenerationResult(
            choices=[merged[i] for i in sorted(merged)],
            prompt_tokens=last.prompt_tokens if last else 0,
            completion_tokens=last.completion_tokens if last else 0,
        )


async def _merge(engine: Any, plan: Plan, request_id: str) -> AsyncIterator[tuple[int, Any]]:
    """Runs every prompt's engine request and yields (prompt index, RequestOutput),
    then (prompt index, None) when that prompt is done. One prompt: no tasks."""
    if len(plan.prompts) == 1:
        async for out in engine.stream(plan.prompts[0], plan.params, plan.engine_request_id(request_id, 0)):
            yield 0, out
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(p: int) -> None:
        try:
            async for out in engine.stream(plan.prompts[p], plan.params,
                                           plan.engine_request_id(request_id, p)):
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


def _planning_error(exc: BaseException, request_id: str) -> ErrorInfo:
    """The request could not be turned into engine input: the caller's fault when
    the template, schema or ids reject it."""
    try:
        from jinja2 import TemplateError
    except ImportError:  # pragma: no cover - jinja2 comes with transformers
        TemplateError = ValueError  # type: ignore[misc,assignment]
    if isinstance(exc, (ValueError, TemplateError)) or is_client_error(exc):
        return ErrorInfo(f"Invalid request: {exc}", param=getattr(exc, "parameter", None))
    return _engine_error(exc, request_id)


def _engine_error(exc: BaseException, request_id: str) -> ErrorInfo:
    """Engine exception → our error value. Client faults keep their message; server
    faults are logged with the traceback and reported without internals."""
    if is_client_error(exc):
        return ErrorInfo(str(exc), param=getattr(exc, "parameter", None))
    logger.exception("request %s failed in the engine", request_id)
    return ErrorInfo(f"Internal server error (request {request_id})", status=500,
                     type="server_error")
