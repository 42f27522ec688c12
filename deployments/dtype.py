"""`dtype: bfloat16-or-float32` in an engine's `engine_kwargs`: bf16 where the hardware
computes it natively, float32 where it would only emulate it.

Why: vLLM's CPU platform lists bf16 as supported on every x86 CPU, but a CPU without
AVX512-BF16 or AMX (an AVX2-only AMD EPYC, say) converts every bf16 product in
software: on such a 2-core machine Gemma 3 270M made 22 tok/s at 16 streams in bf16
against 92 in float32 (one stream: 12 either way). The CPU default asks for this value
so that it runs bf16 where that is fast and float32 elsewhere; an explicit `bfloat16`
or `float32` is passed to vLLM unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

# Serve's logger: the line lands in the replica's Serve log with its replica tag.
logger = logging.getLogger("ray.serve")

BF16_OR_FP32 = "bfloat16-or-float32"
# /proc/cpuinfo flags of a CPU whose bf16 arithmetic is native: x86 (AVX512-BF16,
# AMX) and aarch64 (the BF16 extension, listed under "Features").
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this machine's CPU does bf16 arithmetic in hardware.

    Args:
        cpuinfo: the text of /proc/cpuinfo (read when None; a machine without it,
            e.g. macOS, counts as not native).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & _NATIVE_BF16_FLAGS)


def _cuda_has_bf16() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_dtype(engine_kwargs: dict[str, Any], *, cuda: bool | None = None) -> dict[str, Any]:
    """`engine_kwargs` with `dtype: bfloat16-or-float32` made concrete for this machine
    (a CUDA GPU with bf16, or a CPU with native bf16: bfloat16; else float32); any other
    value, or none, unchanged.

    Args:
        engine_kwargs: an engine's vLLM arguments.
        cuda: whether a bf16-capable CUDA GPU is present (detected when None).
    """
    if engine_kwargs.get("dtype") != BF16_OR_FP32:
        return engine_kwargs
    if cuda is None:
        cuda = _cuda_has_bf16()
    native = cuda or cpu_has_native_bf16()
    dtype = "bfloat16" if native else "float32"
    logger.info(
        "dtype %s: %s (%s)",
        BF16_OR_FP32,
        dtype,
        "bf16 is native here" if native else "this CPU has no native bf16 arithmetic",
    )
    return {**engine_kwargs, "dtype": dtype}
