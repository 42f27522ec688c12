"""Why a model application does not serve (yet), in words a client may read: the
`status_message` of /v1/openai/models, and the reason a 503 model_not_ready gives.

What it is made from, all read by the catalog's refresh (ingress/catalog.py):

- The progress a starting replica publishes (deployments/progress.py):
  "preparing model: converting weights (3/5)", "starting engine (2/2)".
- The replicas in the controller's details: one that is STARTING without a process
  (no pid) has not been given a worker yet. After PLACEMENT_GRACE_S that says
  "waiting to be placed", with what one replica needs (the deployment's
  `required_resources`).
- Serve's deployment message. When a replica has not been placed for 30 s
  (RAY_SERVE_SLOW_STARTUP_WARNING_S), Serve 2.60 writes: "Deployment 'X' in
  application 'Y' has 1 replicas that have taken more than 30s to be scheduled. ...
  Resources required for each replica: {"CPU": 1.0}, total resources available:
  {"CPU": 0.0}. Use `ray status` for more details." (deployment_state.py,
  `_check_and_update_transitioning_replicas`). That gives "waiting for resources:
  needs CPU 1, cluster has 0 free".

Only states, counts, resource names and numbers are taken: the rest of what Serve
writes (tracebacks, file paths, pids, addresses) stays in the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from deployments.contract import StartupProgress

# A replica may go this long without a worker before it is called unplaced: starting
# a worker process takes a few seconds, more on a busy machine.
PLACEMENT_GRACE_S = 10.0

_SCHEDULING = re.compile(
    r"to be scheduled\..*?Resources required for each replica: "
    r"(?P<required>\{.*?\}|\[.*?\]), total resources available: (?P<available>\{.*?\})",
    re.DOTALL,
)
_BYTES = {"memory", "object_store_memory"}
_FIRST = ("CPU", "GPU", "memory")


def plain(value: Any) -> str:
    """A state as a string: the details hold enum members in-process and strings over
    JSON."""
    return str(getattr(value, "value", value))


def unplaced(replica: Mapping[str, Any]) -> bool:
    """Whether a replica (as the details list it) has no worker process yet."""
    return plain(replica.get("state")) == "STARTING" and replica.get("pid") is None


def status_message(
    *,
    status: str,
    running: int,
    target: int,
    serve_message: str,
    required: Mapping[str, Any],
    replicas: list[Mapping[str, Any]],
    progress: StartupProgress | None,
    now: float,
) -> str | None:
    """Why the application does not serve at full strength; None when it does.

    Args:
        status: the application's Serve status.
        running: its RUNNING replicas.
        target: the replicas Serve aims for.
        serve_message: the application's or the deployment's status message.
        required: what one replica needs (the deployment's `required_resources`).
        replicas: the deployment's replicas, as the controller's details list them.
        progress: what a starting replica last published, if any.
        now: the time (time.time()), to age `start_time_s`.
    """
    if status == "DEPLOY_FAILED":
        return "deploy failed: its replicas could not start (details in the Serve logs)"
    if status == "UNHEALTHY" and running == 0:
        return "unhealthy: no replica passes its health check; Serve is replacing them"
    if status == "DELETING":
        return "being deleted"
    if target == 0 and running == 0:
        return "scaled to zero: the next request starts a replica"
    if running >= target:
        return None
    if progress is not None:
        return progress.describe()
    waiting = [r for r in replicas if unplaced(r)]
    if waiting:
        # Serve's message can outlive the wait it describes; it counts only while a
        # replica still has no worker.
        from_serve = pending_resources(serve_message)
        if from_serve is not None:
            return from_serve
        started = [float(r.get("start_time_s") or 0) for r in waiting]
        if any(0 < t < now - PLACEMENT_GRACE_S for t in started):
            needs = needs_text(required, None)
            return f"waiting to be placed: {needs}" if needs else "waiting to be placed"
    return "starting"


def pending_resources(serve_message: str) -> str | None:
    """ "waiting for resources: needs CPU 1, cluster has 0 free" from Serve's message
    about replicas that cannot be scheduled; None for any other message."""
    match = _SCHEDULING.search(serve_message)
    if match is None:
        return None
    try:
        required = json.loads(match["required"])
        available = json.loads(match["available"])
    except ValueError:
        return "waiting for resources"
    if isinstance(required, list):  # placement group bundles: Serve gives no free counts
        total: dict[str, float] = {}
        for bundle in required:
            for name, amount in (bundle if isinstance(bundle, dict) else {}).items():
                total[name] = total.get(name, 0) + amount
        needs = needs_text(total, None)
        bundles = f" in {len(required)} bundles" if len(required) > 1 else ""
        return f"waiting for resources: {needs}{bundles}" if needs else "waiting for resources"
    needs = needs_text(required, available if isinstance(available, dict) else {})
    return f"waiting for resources: {needs}" if needs else "waiting for resources"


def needs_text(required: Mapping[str, Any], free: Mapping[str, Any] | None) -> str:
    """ "needs CPU 1, cluster has 0 free" ("needs CPU 1, GPU 1; cluster has CPU 2, GPU 0
    free" for more than one resource); no free part when `free` is None."""
    shown = {
        name: float(amount)
        for name, amount in sorted(required.items(), key=_resource_order)
        if _public(name) and isinstance(amount, int | float) and amount > 0
    }
    if not shown:
        return ""
    text = "needs " + ", ".join(f"{name} {_amount(name, v)}" for name, v in shown.items())
    if free is None:
        return text
    have = {name: float(free.get(name) or 0) for name in shown}
    if len(have) == 1:
        ((name, amount),) = have.items()
        return f"{text}, cluster has {_amount(name, amount)} free"
    listed = ", ".join(f"{name} {_amount(name, amount)}" for name, amount in have.items())
    return f"{text}; cluster has {listed} free"


def _resource_order(item: tuple[str, Any]) -> tuple[int, str]:
    # Ray's own resources first, in a fixed order, then custom ones by name.
    name = item[0]
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


def _public(name: str) -> bool:
    # node:<ip> and placement-group resources (name_group_<hex>) name hosts and
    # internal ids; a client learns nothing from them.
    return not name.startswith("node:") and "_group_" not in name


def _amount(name: str, value: float) -> str:
    if name in _BYTES:
        return f"{value / 2**30:.3g} GiB"
    return f"{value:g}"
