"""The one module that touches vLLM's Python API (pinned in pyproject.toml).

vLLM moves its internals between releases; keeping every use of them here means an
upgrade is checked in one file. The rest of the LLM deployment sees `VLLMEngine`:
start, render a prompt, stream deltas, abort, health, counts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from deployments.contract import SamplingOptions, TokenLogprob, ToolCall
from deployments.cpu_threads import apply_cpu_threads
from deployments.dtype import resolve_dtype
from deployments.engine_base import AsyncLLMHolder
from deployments.errors import InvalidAdapter, InvalidInput, PromptTooLong
from deployments.llm.cache_stats import CountingLoggerFactory, PrefixCacheCounts
from deployments.llm.config import EngineConfig
from deployments.llm.tools import new_call_id

if TYPE_CHECKING:
    from deployments.engines import AdapterRef

logger = logging.getLogger("ray.serve")


class VLLMEngine(AsyncLLMHolder):
    """vLLM's v1 AsyncLLM behind the LLMEngine protocol (deployments/engines.py)."""

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        self._config = config
        self._model_path = model_path
        self._engine: Any = None
        self._tokenizer: Any = None
        self.max_model_len: int = 0
        self._prefix_cache = PrefixCacheCounts()

    async def start(self) -> None:
        # Imported here so that importing this module (e.g. by the builder, which
        # runs in the controller's process) never loads torch.
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        apply_cpu_threads(self._config.cpu_threads)
        kwargs = resolve_dtype(dict(self._config.engine_kwargs))
        # Compact guided JSON (no free whitespace between tokens): a model cannot pad
        # a forced tool call or a schema answer with newlines until max_tokens, and
        # the output costs fewer tokens. vLLM sets this per engine, not per request.
        so = kwargs.get("structured_outputs_config") or {}
        if isinstance(so, dict):
            # The option exists for the xgrammar and guidance backends only.
            so = StructuredOutputsConfig(
                **{"backend": "xgrammar", "disable_any_whitespace": True, **so}
            )
        kwargs["structured_outputs_config"] = so
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=self._config.served_model_name,
            **kwargs,
        )
        # Our logger beside vLLM's own: the prefix cache's queries and hits, per replica.
        self._engine = AsyncLLM.from_engine_args(
            # vLLM types the factory's product as its StatLoggerBase; ours has that
            # class's methods without importing vLLM (cache_stats.py).
            args,
            stat_loggers=[CountingLoggerFactory(self._prefix_cache)],  # type: ignore[list-item]
        )
        self._tokenizer = self._engine.get_tokenizer()
        self.max_model_len = int(self._engine.model_config.max_model_len)
        logger.info(
            "vLLM engine ready: %s (max_model_len=%d)", self._model_path, self.max_model_len
        )

    def tool_parser(self, name: str) -> ToolCallParser:
        return ToolCallParser(name, self._tokenizer)

    def num_unfinished_requests(self) -> int:
        return int(self._engine.get_num_unfinished_requests()) if self._engine else 0

    def prefix_cache_counts(self) -> dict[str, int]:
        return self._prefix_cache.as_dict()

    # Prompt rendering -----------------------------------------------------------

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Applies the model's chat template (with the tools, for templates that
        render them) and returns the prompt's token ids."""
        ids = self._tokenizer.apply_chat_template(
            messages, tools=tools or None, tokenize=True, add_generation_prompt=True
        )
        # transformers 5 may return a BatchEncoding-like mapping.
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids))

    def check_token_ids(self, ids: list[int]) -> None:
        """Raises InvalidInput for ids outside the vocabulary (vLLM would fail later)."""
        size = len(self._tokenizer)
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise InvalidInput(
                f"token id {bad[0]} is outside the vocabulary (0..{size - 1}); "
                "send text, or ids from this model's tokenizer.",
                parameter="prompt",
            )

    # Generation -----------------------------------------------------------------

    def sampling_params(
        self,
        sampling: SamplingOptions,
        prompt_len: int,
        *,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        json_schema: dict[str, Any] | None = None,
        json_object: bool = False,
    ) -> Any:
        """Maps engine-neutral SamplingOptions onto vLLM's SamplingParams.

        Raises:
            PromptTooLong: if the prompt leaves no room for one generated token, or
                for the `max_tokens` the client asked for.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        room = self.max_model_len - prompt_len
        if room < 1 or (sampling.max_tokens is not None and sampling.max_tokens > room):
            raise PromptTooLong(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"The prompt has {prompt_len} tokens and "
                + (
                    f"{sampling.max_tokens} were asked for completion"
                    if sampling.max_tokens is not None
                    else "no room is left"
                )
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
            "logprobs": logprobs,
            "prompt_logprobs": prompt_logprobs,
        }
        # Structured output (guided decoding) is the engine's, not post-processing:
        # the sampler can only pick tokens that keep the text valid.
        if json_schema is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=json_schema)
        elif json_object:
            kwargs["structured_outputs"] = StructuredOutputsParams(json_object=True)
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
        ):
            value = getattr(sampling, name)
            if value is not None:
                kwargs[name] = value
        return SamplingParams(**kwargs)

    async def stream(
        self,
        prompt_ids: list[int],
        params: Any,
        request_id: str,
        adapter: AdapterRef | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yields vLLM RequestOutputs (deltas). vLLM's generate aborts the request
        itself when this iteration is cancelled or closed."""
        async for out in self._engine.generate(
            {"prompt_token_ids": prompt_ids},
            params,
            request_id,
            lora_request=_lora_request(adapter) if adapter is not None else None,
        ):
            yield out

    # LoRA adapters (enable_lora, max_loras, max_lora_rank, max_cpu_loras come from
    # the config's engine_kwargs) -------------------------------------------------

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Loads the adapter into vLLM's CPU-side cache (LRU, `max_cpu_loras`).

        vLLM validates and reads the files here, in the engine core, and reports any
        failure as a plain Exception "Call to add_lora method failed: <detail>"
        (the class is lost across the process boundary); the engine stays up.

        Raises:
            InvalidAdapter: the files are missing or unreadable, or the rank is past
                `max_lora_rank`.
            RuntimeError: the engine was started without `enable_lora`.
        """
        try:
            await self._engine.add_lora(_lora_request(adapter))
        except Exception as exc:
            detail = str(exc)
            if type(exc) is not Exception or "add_lora method failed" not in detail:
                raise  # the engine died or something else broke: not the adapter's fault
            if "LoRA is not enabled" in detail:
                raise RuntimeError("set enable_lora in engine_kwargs to serve adapters") from exc
            logger.warning("adapter %r (%s) failed to load: %s", adapter.name, adapter.path, detail)
            raise InvalidAdapter(_adapter_problem(detail)) from None

    async def unload_adapter(self, adapter: AdapterRef) -> None:
        if self._engine is not None:
            # False when vLLM did not hold it (never loaded, or evicted from its LRU).
            await self._engine.remove_lora(adapter.int_id)

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    def is_client_error(self, exc: BaseException) -> bool:
        """See LLMEngine.is_client_error (deployments/engines.py)."""
        return is_client_error(exc)


def _lora_request(adapter: AdapterRef) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, adapter.int_id, adapter.path)


def _adapter_problem(detail: str) -> str:
    """A client-safe reason for vLLM's add_lora failure `detail` (which names paths)."""
    if "greater than max_lora_rank" in detail:
        why = "its rank is greater than this engine's max_lora_rank"
    elif "No adapter found" in detail:
        why = "its adapter_config.json or weights are missing"
    else:
        why = "its files are not a valid PEFT LoRA adapter for this model"
    return why


def convert_logprobs(token_ids: Any, logprobs: Any, k: int) -> list[TokenLogprob]:
    """vLLM's per-position {token_id: Logprob} dicts → neutral TokenLogprobs.

    vLLM returns the top k plus the chosen token when that one ranks lower; OpenAI's
    top list is the top k alone. A position may be None: the first prompt token has
    no logprob."""
    out = []
    for i, position in enumerate(logprobs):
        token_id = token_ids[i]
        if position is None:
            out.append(TokenLogprob("", None))
            continue
        chosen = position.get(token_id)
        ranked = sorted(position.values(), key=lambda lp: lp.rank or 0)
        out.append(
            TokenLogprob(
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=float(chosen.logprob) if chosen else None,
                top=[
                    (lp.decoded_token or "", float(lp.logprob))
                    for lp in ranked
                    if lp.rank is not None and lp.rank <= k
                ],
            )
        )
    return out


class ToolCallParser:
    """A model's own tool-call format, read by vLLM's parser of that name."""

    def __init__(self, name: str, tokenizer: Any) -> None:
        from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

        self._cls = ToolParserManager.get_tool_parser(name)
        self._tokenizer = tokenizer

    def extract(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCall]]:
        """Returns (content, calls); no calls when the model answered in text."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        request = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [], "tools": tools}
        )
        # vLLM's parser takes a list of a wider union than the request's (list invariance).
        parser = self._cls(self._tokenizer, request.tools)  # type: ignore[arg-type]
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, []
        calls = [
            ToolCall(c.id or new_call_id(), c.function.name, c.function.arguments or "{}")
            for c in info.tool_calls
        ]
        return info.content or None, calls


def is_client_error(exc: BaseException) -> bool:
    """Whether vLLM rejected the request itself (a 4xx), not failed serving it."""
    from vllm.exceptions import VLLMClientError

    return isinstance(exc, (VLLMClientError, PromptTooLong))
