"""The embeddings engine seam: vLLM's pooling runner behind a small surface.

Every use of vLLM's Python API for embeddings lives here (the version is pinned in
pyproject.toml). The server sees `VLLMEmbeddingEngine`: start, tokenize, embed a
list of token-id lists, health, and the sizes of the batches the engine ran.

Batching: vLLM's scheduler is the dynamic batcher. Every input of every request is
one engine request; whatever is waiting when a step starts runs in that step, up to
`max_num_seqs` inputs and `max_num_batched_tokens` tokens (engine_kwargs). A second
queue in front (Serve's @serve.batch) would add its wait to every call and batch
nothing the scheduler does not already batch. The batch sizes are read from vLLM's
per-step statistics (a stat logger), so they are the sizes of the forward passes
that actually ran, not of a queue in front of them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from deployments.cpu_threads import apply_cpu_threads
from deployments.dtype import resolve_dtype
from deployments.embeddings.config import EmbeddingEngineConfig
from deployments.embeddings.pooling import PoolingMode, PoolingSpec
from deployments.engine_base import AsyncLLMHolder

logger = logging.getLogger("ray.serve")

_VLLM_POOLING: dict[PoolingMode, Literal["MEAN", "CLS", "LAST"]] = {
    "mean": "MEAN",
    "cls": "CLS",
    "last": "LAST",
}


class VLLMEmbeddingEngine(AsyncLLMHolder):
    """vLLM's v1 AsyncLLM with runner="pooling", told the model's own pooling."""

    def __init__(
        self,
        config: EmbeddingEngineConfig,
        model_path: str,
        spec: PoolingSpec,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Args:
        config: the application's engine section.
        model_path: the local model directory.
        spec: the resolved pooling (mode and normalize set).
        on_batch: called with each engine step's batch size (for a metric).
        """
        self._config = config
        self._model_path = model_path
        self._spec = spec
        self._on_batch = on_batch
        self._engine: Any = None
        self._tokenizer: Any = None
        # HF fast tokenizers keep truncation settings on the shared Rust object, so
        # two threads tokenizing with different limits at once could swap them.
        self._tokenize_lock = threading.Lock()
        self._ids = itertools.count()
        self.batch_sizes: Counter[int] = Counter()
        self.max_input_tokens = 0
        self.vocab_size = 0
        self.dimensions = 0

    async def start(self) -> None:
        # Imported here so that importing this module (the builder runs in the
        # controller's process) never loads torch.
        from vllm.config import PoolerConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        apply_cpu_threads(self._config.cpu_threads)
        kwargs = resolve_dtype(dict(self._config.engine_kwargs))
        if self._spec.max_seq_length and "max_model_len" not in kwargs:
            # What sentence-transformers truncates at (all-MiniLM-L6-v2: 256 of 512
            # positions); vLLM reads the same file, this makes it explicit.
            kwargs["max_model_len"] = self._spec.max_seq_length
        # Our stat logger is the one we need; vLLM's default loggers print
        # throughput lines every few seconds.
        kwargs.setdefault("disable_log_stats", True)
        mode = self._spec.mode
        assert mode is not None, "the spec is resolved (resolve_pooling)"
        args = AsyncEngineArgs(
            model=self._model_path,
            runner="pooling",
            served_model_name=self._config.served_model_name,
            # Stated, not left to vLLM's reading of the same files: vLLM knows only
            # some module type paths, and a config override must win.
            pooler_config=PoolerConfig(
                seq_pooling_type=_VLLM_POOLING[mode], use_activation=self._spec.normalize
            ),
            **kwargs,
        )
        self._engine = AsyncLLM.from_engine_args(
            args, stat_loggers=[_batch_logger_factory(self._record_batch)]
        )
        self._tokenizer = self._engine.get_tokenizer()
        self.max_input_tokens = int(self._engine.model_config.max_model_len)
        self.vocab_size = int(self._engine.model_config.get_vocab_size())
        # The first passes are much slower than warm ones on CPU: pay that here, and
        # learn the output size (a Dense module may differ from the hidden size).
        # Warm-up batches are not counted.
        on_batch, self._on_batch = self._on_batch, None
        warm = await self.embed(self.tokenize(["warm up the engine"] * 2), "warmup")
        self.dimensions = int(warm.shape[1])
        self.batch_sizes.clear()
        self._on_batch = on_batch
        logger.info(
            "vLLM embedding engine ready: %s (pooling=%s, normalize=%s, "
            "max_input_tokens=%d, dimensions=%d)",
            self._model_path,
            self._spec.mode,
            self._spec.normalize,
            self.max_input_tokens,
            self.dimensions,
        )

    def _record_batch(self, size: int) -> None:
        self.batch_sizes[size] += 1
        if self._on_batch is not None:
            self._on_batch(size)

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids of each text, with the model's special tokens.

        Args:
            texts: the inputs.
            max_tokens: cut each to this many tokens (special tokens kept, as
                sentence-transformers truncates); None: no cut.
        """
        if self._spec.do_lower_case:
            texts = [t.lower() for t in texts]
        with self._tokenize_lock:
            out = self._tokenizer(
                texts,
                add_special_tokens=True,
                truncation=max_tokens is not None,
                max_length=max_tokens,
            )
        return [list(ids) for ids in out["input_ids"]]

    async def embed(self, token_ids: list[list[int]], request_id: str) -> np.ndarray:
        """Pools each token-id list into one vector.

        Returns:
            float32 array of shape (len(token_ids), dimensions), in input order.
        """
        from vllm import PoolingParams

        params = PoolingParams(task="embed")
        # Request ids must be unique in the engine; clients may reuse theirs.
        base = f"{request_id}-{next(self._ids)}"
        ids = [f"{base}-{i}" for i in range(len(token_ids))]

        async def one(prompt: list[int], rid: str) -> Any:
            last: Any = None
            async for out in self._engine.encode({"prompt_token_ids": prompt}, params, rid):
                last = out
            return last.outputs.data

        try:
            outs = await asyncio.gather(*(one(p, r) for p, r in zip(token_ids, ids, strict=True)))
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away: drop every input still waiting in the engine so no
            # step is spent on nobody (vLLM's encode aborts its own on cancel too).
            await asyncio.shield(self._engine.abort(ids))
            raise
        import torch

        return torch.stack(outs).to(torch.float32).numpy()


def _batch_logger_factory(record: Callable[[int], None]) -> Any:
    """A vLLM stat-logger class that reports how many requests each step finished.

    A pooling request finishes in the step that runs it (no decode), so the count
    is that forward pass's batch size. vLLM documents the stats objects as unstable;
    the version pin covers that."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class BatchSizeLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if iteration_stats is not None and iteration_stats.finished_requests:
                record(len(iteration_stats.finished_requests))

        def log_engine_initialized(self) -> None:
            pass

    return BatchSizeLogger
