"""Our vLLM general plugin: the entry point `vllm.general_plugins` (pyproject.toml), which
vLLM loads in every process it runs (the replica's, its engine core, its workers) before
it sets up torch.distributed. It does nothing unless the process's environment asks.

OPENAI_SERVE_GLOO_ONE_DEVICE=1 (serve_config.yaml's CPU engines): every torch.distributed
gloo group of the process shares one gloo device. vLLM makes about 13 gloo groups per
engine process even for a world of one (world, tensor, pipeline, data, expert... each a
device group and a CPU group on CPU), and torch gives each group a TCP device of its
own, whose event-loop thread wakes every 10 ms: 13 such threads cost about 1.3 % of a
core per engine with no traffic at all (`bench/idle_cpu.py --threads`: the largest
single item of the CPU default's idle). torch's ProcessGroupGloo takes its devices in
its options and a gloo device serves any number of groups' connections on its one
loop, so all groups get the process's first device: one thread, about 0.15 %.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

GLOO_ONE_DEVICE_ENV = "OPENAI_SERVE_GLOO_ONE_DEVICE"


def register() -> None:
    """vLLM calls this once per process (vllm.plugins.load_general_plugins)."""
    if os.environ.get(GLOO_ONE_DEVICE_ENV) == "1":
        share_one_gloo_device()


def share_one_gloo_device() -> bool:
    """Makes every gloo process group created from now on in this process use one
    shared device. Returns False when it was already done (idempotent)."""
    import torch.distributed.distributed_c10d as c10d

    base: Any = c10d.ProcessGroupGloo
    if getattr(base, "one_device", False):
        return False
    shared: list[Any] = []  # the device, made on first use (it binds a host address)

    class OneDeviceGloo(base):  # type: ignore[misc]
        """ProcessGroupGloo whose default options name the shared device. A subclass,
        not a function, so `isinstance(pg, ProcessGroupGloo)` still holds."""

        one_device = True

        def __init__(
            self,
            store: Any,
            rank: int,
            size: int,
            options_or_timeout: Any = c10d.default_pg_timeout,
            *,
            timeout: timedelta | None = None,
        ) -> None:
            if not isinstance(options_or_timeout, timedelta):  # given options: as asked
                super().__init__(store, rank, size, options_or_timeout)
                return
            if not shared:
                shared.append(base.create_default_device())
            options = base._Options()
            options._timeout = timeout if timeout is not None else options_or_timeout
            options._devices = [shared[0]]
            super().__init__(store, rank, size, options)

    # A monkeypatch of torch's class, which its stubs declare fixed.
    c10d.ProcessGroupGloo = OneDeviceGloo  # type: ignore[misc,assignment]
    return True
