"""`cpu_threads` in a vLLM engine's config: how many OpenMP threads its forward pass
uses on CPU.

Why: Ray gives every worker process `OMP_NUM_THREADS` equal to its `num_cpus` (1 for
the CPU default's replicas), and a vLLM engine run as one process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) binds no threads of its own, so its engine core
inherits that one thread and leaves every other core to a serving path that needs a
fraction of one. `vllm serve` in the same layout has no Ray and computes on every core.
Measured on the 2-core machine (Gemma 3 270M, 16 streams, one run each): one thread 75
tokens/s (engine 0.94 of a core, the serving path 0.19), every core 104 (engine 1.70);
`vllm serve` with the same engine 129. `all` is every CPU this process may run on.
The serving path then shares those cores with the engine's threads: Ray's `num_cpus`
stays the scheduling figure, this is the compute one.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

logger = logging.getLogger("ray.serve")

CpuThreads = int | Literal["all"] | None


def thread_count(value: CpuThreads, *, allowed_cpus: int | None = None) -> int | None:
    """The number of threads `value` asks for here (None: leave the environment's).

    Args:
        value: the config's `cpu_threads`: a count, `all`, or None.
        allowed_cpus: how many CPUs this process may run on (read when None).
    """
    if value is None:
        return None
    if value == "all":
        if allowed_cpus is None:
            allowed_cpus = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return max(1, allowed_cpus)
    return int(value)


def apply_cpu_threads(value: CpuThreads, *, cuda: bool | None = None) -> int | None:
    """Sets `OMP_NUM_THREADS` for the engine processes this replica starts next (vLLM
    spawns them in a Ray actor, so they read it at start). A no-op for None or on a
    CUDA machine, where the engine computes on the GPU. Returns the count set.
    """
    n = thread_count(value)
    if n is None:
        return None
    if cuda is None:
        cuda = _cuda_available()
    if cuda:
        return None
    os.environ["OMP_NUM_THREADS"] = str(n)
    logger.info("cpu_threads=%s: the engine computes with %d OpenMP threads", value, n)
    return n


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
