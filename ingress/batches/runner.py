"""A batch's pipeline on Ray Data: its checked requests → one output row per line.

    read_json(requests)           the rows input.py wrote: {"i", "custom_id", "body"}
    → filter                      lines a checkpoint already holds are not run again
    → map_batches(call_lines)     each block to one of the supervisor's callers
                                  (caller.py), which runs every line through the online
                                  endpoint's own code (parse, bounds, resolve, forward,
                                  shape): a batch line is exactly the request it would
                                  be online

Every operator asks for no CPU: the work is the model replicas', which hold the CPUs
(on a machine whose CPUs Serve replicas all took, a task wanting one would never run).
The callers outlive the batch (they are the supervisor's), so the map step is a light
task: this module imports nothing of the ingress. Ray reuses its idle task workers for
the next batches; a new one still imports Ray Data (seconds of CPU, once per worker).
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

CALLS_PER_CALLER = 2  # blocks in flight per caller: one fills its gate, one waits


def call_lines(
    block: dict[str, Any],
    callers: list[Any],
    key: str,
    endpoint: str,
    owner: str,
    in_flight: int,
) -> dict[str, Any]:
    """The map step: hands a block to a caller and waits for its output rows."""
    import ray

    caller = random.choice(callers)
    out: dict[str, Any] = ray.get(caller.run.remote(key, endpoint, owner, in_flight, block))
    return out


def pipeline(
    requests_path: str,
    filesystem: Any,
    done: set[int],
    callers: list[Any],
    key: str,
    endpoint: str,
    owner: str,
    concurrency: int,
) -> Any:
    """The batch's Ray Data dataset (lazy: it runs as the supervisor iterates it).

    `concurrency` lines at most in flight in all, `concurrency // len(callers)` per
    caller (its gate for the run `key`); blocks of a gate each, CALLS_PER_CALLER of them
    per caller at once, so the lines of the next blocks wait at the gate while the last
    ones of a block finish (one block at a time would leave the engine half idle)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # a log line per update in a Serve replica
    ds = ray.data.read_json(requests_path, filesystem=filesystem, ray_remote_args={"num_cpus": 0})
    if done:
        ds = ds.filter(lambda row: row["i"] not in done, num_cpus=0)
    in_flight = max(1, concurrency // len(callers))
    step = partial(
        call_lines, callers=callers, key=key, endpoint=endpoint, owner=owner, in_flight=in_flight
    )
    return ds.map_batches(
        step,
        batch_size=in_flight,
        # A cap of its own also keeps Ray Data from fusing the step into the read
        # (which reads the file in one task: its blocks would run one after another).
        concurrency=CALLS_PER_CALLER * len(callers),
        num_cpus=0,
        batch_format="numpy",
    )
