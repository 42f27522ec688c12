"""deployments/vllm_plugin.py: vLLM finds it, it is a no-op unless asked, and asked it
puts every gloo group of a process on one device (one event-loop thread) with
collectives still right. Each case runs in a fresh interpreter: the patch is global."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

from deployments.vllm_plugin import GLOO_ONE_DEVICE_ENV

# vLLM's engine makes about this many gloo groups per process for a world of one.
_GROUPS = 12
_PROBE = f"""
import json, os, tempfile
import torch, torch.distributed as dist
from deployments.vllm_plugin import register
register()
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
groups = [dist.new_group([0], backend="gloo") for _ in range({_GROUPS})]
sums = []
for g in groups:
    t = torch.tensor([1.0, 2.0])
    dist.all_reduce(t, group=g)
    dist.broadcast(t, 0, group=g)
    sums.append(t.tolist())
names = [open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task")]
gloo = dist.distributed_c10d.ProcessGroupGloo
print(json.dumps({{"loops": names.count("gloo_tcp_loop"), "sums": sums,
    "patched": getattr(gloo, "one_device", False)}}))
"""


def _probe(**env: str) -> dict:
    run_env = {k: v for k, v in os.environ.items() if k != GLOO_ONE_DEVICE_ENV}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**run_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_vllm_finds_the_plugin():
    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names.get("openai_serve") == "deployments.vllm_plugin:register"


def test_asked_every_group_shares_one_gloo_loop_and_collectives_hold():
    result = _probe(**{GLOO_ONE_DEVICE_ENV: "1"})
    assert result["patched"] is True
    assert result["loops"] == 1
    assert result["sums"] == [[1.0, 2.0]] * _GROUPS


def test_not_asked_torch_is_left_alone():
    result = _probe()
    assert result["patched"] is False
    assert result["loops"] == _GROUPS + 1  # torch's own: one device per group
    assert result["sums"] == [[1.0, 2.0]] * _GROUPS
