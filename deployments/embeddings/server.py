"""The embeddings model deployment: one pooling engine per replica.

It speaks only the neutral contract (deployments/contract.py): EmbedRequest in,
EmbeddingResult / ErrorInfo out. The OpenAI wire shape, base64 included, is the
ingress's business; vectors cross the handle as float32 bytes.

Checks that depend on the model live here (the ingress cannot know them): input
length in tokens, token ids in the vocabulary, `dimensions` at most the model's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from deployments.contract import EmbeddingResult, EmbedRequest, ErrorInfo
from deployments.embeddings.config import EmbeddingAppConfig, EmbeddingEngineConfig
from deployments.embeddings.engine import VLLMEmbeddingEngine
from deployments.embeddings.pooling import resolve_pooling
from deployments.engines import EmbeddingEngine, EmbeddingEngineClass
from deployments.errors import internal_error
from deployments.server_base import ModelServer

logger = logging.getLogger("ray.serve")

_BATCH_BUCKETS: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class EmbeddingServer(ModelServer[EmbeddingAppConfig, EmbeddingEngine]):
    """Serve deployment class; the builder wraps it with serve.deployment."""

    config_cls = EmbeddingAppConfig

    async def __init__(  # type: ignore[misc]  # Serve awaits it (server_base.py)
        self, config: dict[str, Any], *, engine_cls: EmbeddingEngineClass = VLLMEmbeddingEngine
    ) -> None:
        """Starts the engine (see ModelServer) with the model's own pooling.

        Args:
            config: the application's EmbeddingAppConfig as JSON.
            engine_cls: the engine class; tests pass a typed fake.
        """
        await super().__init__(config, engine_cls=engine_cls)

    def _make_engine(
        self,
        engine_cls: EmbeddingEngineClass,
        engine_config: EmbeddingEngineConfig,
        model_path: str,
    ) -> EmbeddingEngine:
        # The pooling is read from the model directory (config overrides win), so it
        # is known only once the source is resolved.
        self._spec = resolve_pooling(model_path, engine_config.pooling, engine_config.normalize)
        return engine_cls(
            engine_config, model_path, self._spec, on_batch=_batch_histogram(self._config.model)
        )

    def stats(self) -> dict[str, Any]:
        """Engine batch sizes seen since start ({size: steps}), for tests and tuning."""
        return {
            "batch_sizes": dict(self._engine.batch_sizes),
            "dimensions": self._engine.dimensions,
            "max_input_tokens": self._engine.max_input_tokens,
            "pooling": self._spec.mode,
            "normalize": self._spec.normalize,
        }

    async def embed(self, request: EmbedRequest) -> EmbeddingResult | ErrorInfo:
        """Embeds every input; see contract.EmbeddingDeployment.embed."""
        engine = self._engine
        if not request.inputs:  # the ingress never sends this; other callers might
            return ErrorInfo("input must not be empty.", param="input")
        if request.dimensions is not None and request.dimensions > engine.dimensions:
            return ErrorInfo(
                f"dimensions must be at most {engine.dimensions} for this model (its "
                "vectors have that many); omit it for full vectors.",
                param="dimensions",
                code="invalid_value",
            )
        limit = truncation_limit(request.truncate_prompt_tokens, engine.max_input_tokens)
        if isinstance(limit, ErrorInfo):
            return limit
        try:
            if isinstance(request.inputs[0], str):
                # Off the event loop: 2048 texts take tens of milliseconds, which
                # would stall every other request's results meanwhile.
                token_ids = await asyncio.to_thread(engine.tokenize, request.inputs, limit)
            else:
                token_ids = [ids[:limit] if limit else ids for ids in request.inputs]
        except Exception as exc:  # a tokenizer failure is ours
            return internal_error(request.request_id, exc)
        error = check_token_ids(token_ids, engine.max_input_tokens, engine.vocab_size)
        if error is not None:
            return error
        try:
            vectors = await engine.embed(token_ids, request.request_id)
        except Exception as exc:  # inputs were checked above: an engine failure is ours
            return internal_error(request.request_id, exc)
        vectors = reduce_dimensions(vectors, request.dimensions, bool(self._spec.normalize))
        return EmbeddingResult(
            vectors=[row.tobytes() for row in vectors.astype("<f4", copy=False)],
            prompt_tokens=sum(len(ids) for ids in token_ids),
        )


def truncation_limit(asked: int | None, max_tokens: int) -> int | ErrorInfo | None:
    """The token count to cut inputs to, from the `truncate_prompt_tokens` extra.

    Args:
        asked: the request's value: None (no cut), -1 (the model's maximum) or k.
        max_tokens: the model's maximum input length.

    Returns:
        None, a limit, or an ErrorInfo for a limit the model cannot take.
    """
    if asked is None:
        return None
    if asked == -1:
        return max_tokens
    if asked < 1 or asked > max_tokens:
        return ErrorInfo(
            f"truncate_prompt_tokens must be -1 (this model's maximum, {max_tokens}) "
            f"or between 1 and {max_tokens}.",
            param="truncate_prompt_tokens",
            code="invalid_value",
        )
    return asked


def check_token_ids(
    token_ids: list[list[int]], max_tokens: int, vocab_size: int
) -> ErrorInfo | None:
    """An ErrorInfo for the first input the model cannot take, else None."""
    many = len(token_ids) > 1
    for i, ids in enumerate(token_ids):
        where = f"Input {i}" if many else "The input"
        if len(ids) > max_tokens:
            return ErrorInfo(
                f"{where} has {len(ids)} tokens; this model's maximum input length is "
                f'{max_tokens} tokens. Shorten it, or send "truncate_prompt_tokens": '
                "-1 to cut inputs to the maximum.",
                kind="context_length",
                param="input",
                code="context_length_exceeded",
            )
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            return ErrorInfo(
                f"{where} has token id {bad}, outside this model's vocabulary "
                f"(0 to {vocab_size - 1}). Send text, or ids from this model's tokenizer.",
                param="input",
                code="invalid_value",
            )
    return None


def reduce_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Keeps the first `dimensions` components (Matryoshka-style, as OpenAI's
    `dimensions` does), re-normalised to unit length when the model's vectors are
    unit length, so cosine and dot product still agree.

    Args:
        vectors: (n, d) float32.
        dimensions: the request's value, or None for all d.
        normalize: whether the model's vectors are L2-normalised.
    """
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    if not normalize:
        return cut
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    unit: np.ndarray = cut / np.maximum(norms, np.finfo(np.float32).tiny)
    return unit


def _batch_histogram(model: str) -> Callable[[int], None]:
    """A Ray metric of engine batch sizes (exported with Serve's metrics)."""
    from ray.util import metrics

    hist = metrics.Histogram(
        "openai_serve_embedding_batch_size",
        description="Inputs per embedding engine step.",
        boundaries=_BATCH_BUCKETS,
        tag_keys=("model",),
    )
    hist.set_default_tags({"model": model})
    return hist.observe
