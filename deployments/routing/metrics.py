"""The router's decisions, exported: `openai_serve_router_decisions` (Ray prefixes
`ray_` and Prometheus suffixes `_total`), by application (`deploy_id`) and kind
(deployments/routing/policy.py DECISION_KINDS).

Kept apart from prefix_router.py because Serve rebuilds the router class by value in
each caller's process with a copy of its module's globals: the one counter of a
process lives here, imported by reference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_COUNTER: Any = None
_LOCK = threading.Lock()


def decision_recorder(app: str) -> Callable[[str], None] | None:
    """A function counting one decision of `app` by kind, or None outside a Ray
    worker (unit tests, bench/router_decision.py): nothing is exported there."""
    global _COUNTER
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter
    except Exception:
        return None
    with _LOCK:
        if _COUNTER is None:
            _COUNTER = Counter(
                "openai_serve_router_decisions",
                "Routing decisions of the prefix-aware router, by kind.",
                tag_keys=("deploy_id", "kind"),
            )
        counter = _COUNTER
    tags: dict[str, dict[str, str]] = {}

    def record(kind: str) -> None:
        tag = tags.get(kind)
        if tag is None:
            tag = tags[kind] = {"deploy_id": app, "kind": kind}
        counter.inc(1.0, tag)

    return record
