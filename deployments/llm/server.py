"""The LLM model deployment: one vLLM engine per replica.

It speaks only the neutral contract (deployments/contract.py): GenerateRequest in,
GenerationChunk / GenerationResult / ErrorInfo out. OpenAI wire shapes are the
ingress's business.
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
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()

    # Requests -------------------------------------------------------------------

    def _prepare(self, request: GenerateRequest) -> tuple[list[int], Any]:
        """Renders the prompt and maps the sampling options (one place, both paths)."""
        if request.kind == "chat":
            prompt_ids = self._engine.render_chat(request.messages or [])
        elif isinstance(request.prompt, str):
            prompt_ids = self._engine.encode(request.prompt)
        else:
            prompt_ids = list(request.prompt or [])
        return prompt_ids, self._engine.sampling_params(request.sampling, len(prompt_ids))

    async def generate(
        self, request: GenerateRequest
    ) -> AsyncIterator[GenerationChunk | ErrorInfo]:
        try:
            prompt_ids, params = self._prepare(request)
        except PromptTooLong as exc:
            yield ErrorInfo(str(exc), param="messages" if request.kind == "chat"
                            else "prompt", code="context_length_exceeded")
            return
        except Exception as exc:  # template or tokenizer rejected the input
            yield _error_from(exc, request.request_id)
            return
        completion_tokens = 0
        try:
            async for out in self._engine.stream(prompt_ids, params, request.request_id):
                deltas = []
                for o in out.outputs:
                    completion_tokens += len(o.token_ids)
                    deltas.append(ChoiceDelta(o.index, o.text, len(o.token_ids),
                                              o.finish_reason))
                yield GenerationChunk(deltas, len(prompt_ids), completion_tokens,
                                      out.finished)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: vLLM's generate aborts on cancel already; abort
            # again by id so no engine step is spent on nobody, whatever path we
            # took, then let the cancellation finish.
            await asyncio.shield(self._engine.abort(request.request_id))
            raise
        except Exception as exc:
            yield _error_from(exc, request.request_id)

    async def complete(self, request: GenerateRequest) -> GenerationResult | ErrorInfo:
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str | None] = {}
        last: GenerationChunk | None = None
        async for item in self.generate(request):
            if isinstance(item, ErrorInfo):
                return item
            last = item
            for d in item.deltas:
                texts.setdefault(d.index, []).append(d.text)
                if d.finish_reason is not None:
                    reasons[d.index] = d.finish_reason
        n = request.sampling.n
        return GenerationResult(
            texts=["".join(texts.get(i, [])) for i in range(n)],
            finish_reasons=[reasons.get(i) for i in range(n)],
            prompt_tokens=last.prompt_tokens if last else 0,
            completion_tokens=last.completion_tokens if last else 0,
        )


def _error_from(exc: BaseException, request_id: str) -> ErrorInfo:
    """Engine exception → our error value. Client faults keep their message; server
    faults are logged with the traceback and reported without internals."""
    if is_client_error(exc):
        return ErrorInfo(str(exc), param=getattr(exc, "parameter", None))
    logger.exception("request %s failed in the engine", request_id)
    return ErrorInfo(f"Internal server error (request {request_id})", status=500,
                     type="server_error")
