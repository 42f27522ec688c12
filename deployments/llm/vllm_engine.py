"""The one module that touches vLLM's Python API (pinned in pyproject.toml).

vLLM moves its internals between releases; keeping every use of them here means an
upgrade is checked in one file. The rest of the LLM deployment sees `VLLMEngine`:
start, render a prompt, stream deltas, abort, health, counts.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from deployments.llm.config import EngineConfig

logger = logging.getLogger("ray.serve")


class PromptTooLong(ValueError):
    """The prompt (plus the asked-for output) does not fit the model's context."""


class VLLMEngine:
    """vLLM's v1 AsyncLLM behind a small surface the server depends on."""

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        self._config = config
        self._model_path = model_path
        self._engine: Any = None
        self._tokenizer: Any = None
        self.max_model_len: int = 0

    async def start(self) -> None:
        # Imported here so that importing this module (e.g. by the builder, which
        # runs in the controller's process) never loads torch.
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=self._config.served_model_name,
            **self._config.engine_kwargs,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        self.max_model_len = int(self._engine.model_config.max_model_len)
        logger.info("vLLM engine ready: %s (max_model_len=%d)",
                    self._model_path, self.max_model_len)

    def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def check_health(self) -> None:
        """Raises only if the engine is dead (Serve then replaces the replica)."""
        if self._engine is None:
            raise RuntimeError("engine not started")
        await self._engine.check_health()

    def num_unfinished_requests(self) -> int:
        return int(self._engine.get_num_unfinished_requests()) if self._engine else 0

    # Prompt rendering -----------------------------------------------------------

    def render_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Applies the model's chat template and returns the prompt's token ids."""
        ids = self._tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True
        )
        # transformers 5 may return a BatchEncoding-like mapping.
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text))

    # Generation -----------------------------------------------------------------

    def sampling_params(self, sampling: Any, prompt_len: int) -> Any:
        """Maps engine-neutral SamplingOptions onto vLLM's SamplingParams.

        Raises:
            PromptTooLong: if the prompt leaves no room for one generated token, or
                for the `max_tokens` the client asked for.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        room = self.max_model_len - prompt_len
        if room < 1 or (sampling.max_tokens is not None and sampling.max_tokens > room):
            raise PromptTooLong(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"The prompt has {prompt_len} tokens and "
                + (f"{sampling.max_tokens} were asked for completion"
                   if sampling.max_tokens is not None else "no room is left")
                + ". Shorten the prompt or lower max_tokens."
            )
        kwargs: dict[str, Any] = {
            "n": sampling.n,
            "max_tokens": sampling.max_tokens if sampling.max_tokens is not None else room,
            "stop": list(sampling.stop) or None,
            "stop_token_ids": list(sampling.stop_token_ids) or None,
            "ignore_eos": sampling.ignore_eos,
            "seed": sampling.seed,
            # DELTA: each RequestOutput carries only the new text, so the server does
            # no diffing and each streamed item stays small.
            "output_kind": RequestOutputKind.DELTA,
        }
        for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                     "frequency_penalty", "repetition_penalty"):
            value = getattr(sampling, name)
            if value is not None:
                kwargs[name] = value
        return SamplingParams(**kwargs)

    async def stream(
        self, prompt_ids: list[int], params: Any, request_id: str
    ) -> AsyncIterator[Any]:
        """Yields vLLM RequestOutputs (deltas). vLLM's generate aborts the request
        itself when this iteration is cancelled or closed."""
        async for out in self._engine.generate(
            {"prompt_token_ids": prompt_ids}, params, request_id
        ):
            yield out

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)


def is_client_error(exc: BaseException) -> bool:
    """Whether vLLM rejected the request itself (a 400), not failed serving it."""
    from vllm.exceptions import VLLMClientError

    return isinstance(exc, (VLLMClientError, PromptTooLong))
