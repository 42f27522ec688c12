"""Idle CPU of a running Serve stack: every Ray and Serve process, no traffic.

    .venv/bin/python bench/idle_cpu.py --temp-dir /tmp/openai-serve-ray-$UID [--pid PID]
        [--url http://127.0.0.1:8000] [--window 60] [--threads N] [--out bench/results]

Processes: those whose command line names the Ray temp dir (`ray start`, gcs_server,
raylet, dashboard, agents, log_monitor, ...) and those given by --pid (e.g. the
`scripts/serve.sh` or `serve run` process), with all their descendants (workers: the
Serve controller, proxy, replicas, vLLM's engine-core children). It first waits until
GET /health answers and every model in GET /v1/openai/models is RUNNING, then sums
utime+stime from /proc/<pid>/stat over the window (processes that start or end in it
count for what they used while seen). It prints JSON: % of one core per process group
(by command line) and in all, plus the machine's busy % from /proc/stat for context,
and writes it to <out>/idle-<timestamp>.json; with --threads N also the N busiest
threads by (process group, thread name). Standard library only; Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# Command line (or process title: Ray sets it to the actor) → group; first match wins.
KINDS = [
    ("vllm engine worker", ("VLLM::Worker", "multiprocessing.spawn")),
    ("vllm engine core", ("EngineCore",)),
    ("serve controller", ("ServeController",)),
    ("serve proxy", ("ProxyActor",)),
    ("replica openai (ingress)", ("ServeReplica:openai:",)),
    ("replica gemma", ("ServeReplica:gemma",)),
    ("replica minilm", ("ServeReplica:all-minilm",)),
    ("replica flux", ("ServeReplica:tiny-flux",)),
    ("replica other", ("ServeReplica:",)),
    ("gcs_server", ("gcs_server",)),
    ("raylet", ("raylet/raylet",)),
    ("dashboard agent", ("DashboardAgent", "dashboard/agent.py")),
    ("runtime env agent", ("RuntimeEnvAgent", "runtime_env/agent")),
    ("dashboard modules", ("ray-dashboard-", "ray.dashboard.subprocesses")),
    ("dashboard head", ("dashboard/dashboard.py",)),
    ("log monitor", ("log_monitor",)),
    ("autoscaler monitor", ("monitor.py",)),
    ("ray client server", ("ray.util.client.server",)),
    ("resource tracker", ("resource_tracker",)),
    ("idle ray worker", ("default_worker", "ray::IDLE")),
    ("serve run (CLI)", ("serve run",)),
    ("ray start (CLI)", ("ray start",)),
    ("scripts", ("serve.sh", "ray_head.sh", "announce.py")),
]


def read_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime in ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "(comm) "
    return int(fields[1]), int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid → (thread name, utime+stime in ticks) of a live process's threads."""
    out: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))
    return out


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def kind_of(cmd: str) -> str:
    for kind, needles in KINDS:
        if any(n in cmd for n in needles):
            return kind
    return "other: " + (cmd.split(" ")[0].rsplit("/", 1)[-1] or "?")


def our_processes(temp_dir: str | None, roots: list[int]) -> dict[int, tuple[str, int]]:
    """pid → (command line, CPU ticks) of the roots, temp-dir processes and descendants."""
    procs: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := read_stat(int(name))) is not None:
            procs[int(name)] = (st[0], st[1], cmdline(int(name)))
    procs.pop(os.getpid(), None)  # this script names the temp dir too
    chosen = {p for p in roots if p in procs}
    if temp_dir:
        chosen |= {p for p, (_, _, cmd) in procs.items() if temp_dir in cmd}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(chosen)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in chosen:
                chosen.add(child)
                todo.append(child)
    return {p: (procs[p][2], procs[p][1]) for p in chosen}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    return sum(cpu[:8]) - idle, sum(cpu[:8])


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read() or b"null")


def wait_ready(url: str, timeout_s: float) -> None:
    """Until /health answers and every model is RUNNING."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            get_json(url + "/health")
            models = get_json(url + "/v1/openai/models")["data"]  # type: ignore[index]
            waiting = [m["id"] for m in models if m.get("status") != "RUNNING"]
            if models and not waiting:
                return
            last = f"not RUNNING: {waiting}"
        except Exception as e:  # still starting
            last = repr(e)
        time.sleep(2)
    sys.exit(f"not ready after {timeout_s:.0f} s: {last}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--temp-dir", help="the head's Ray temp dir (its processes name it)")
    ap.add_argument("--pid", type=int, action="append", default=[], help="root process")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the API, for readiness")
    ap.add_argument("--no-wait", action="store_true", help="measure at once")
    ap.add_argument("--settle", type=float, default=10.0, help="s to wait once ready")
    ap.add_argument("--window", type=float, default=60.0, help="measured seconds")
    ap.add_argument("--label", default="", help="free text kept in the result")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="also report the N busiest (process group, thread name) pairs",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if not args.temp_dir and not args.pid:
        ap.error("give --temp-dir and/or --pid")
    if not args.no_wait:
        wait_ready(args.url.rstrip("/"), 900)
        time.sleep(args.settle)
    seen: dict[int, tuple[str, int, int]] = {}  # pid → (cmd, first ticks, last ticks)
    # (pid, tid) → (thread name, first ticks, last ticks), with --threads
    threads: dict[tuple[int, int], tuple[str, int, int]] = {}

    def sample() -> None:
        for pid, (cmd, ticks) in our_processes(args.temp_dir, args.pid).items():
            first = seen[pid][1] if pid in seen else ticks
            seen[pid] = (cmd, first, ticks)
            if args.threads:
                for tid, (name, t) in thread_ticks(pid).items():
                    key = (pid, tid)
                    threads[key] = (name, threads[key][1] if key in threads else t, t)

    m0, t0 = machine_ticks(), time.monotonic()
    sample()
    start_pids = set(seen)
    while (left := t0 + args.window - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        sample()
    elapsed = time.monotonic() - t0
    m1 = machine_ticks()
    pct = lambda ticks: round(100.0 * ticks / TICK / elapsed, 2)  # noqa: E731
    ticks: dict[str, int] = {}
    count: dict[str, int] = {}
    example: dict[str, str] = {}
    for pid, (cmd, first, last) in seen.items():
        kind = kind_of(cmd)
        ticks[kind] = ticks.get(kind, 0) + (last - first if pid in start_pids else last)
        count[kind] = count.get(kind, 0) + 1
        example.setdefault(kind, cmd[:100])
    groups = {
        k: {"pct_of_one_core": pct(t), "processes": count[k], "example": example[k]}
        for k, t in sorted(ticks.items(), key=lambda kv: -kv[1])
    }
    by_thread: dict[str, int] = {}
    for (pid, _), (name, first, last) in threads.items():
        key = f"{kind_of(seen[pid][0])} / {name}"
        by_thread[key] = by_thread.get(key, 0) + last - first
    busiest = sorted(by_thread.items(), key=lambda kv: -kv[1])[: args.threads]
    result = {
        "label": args.label,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "window_s": round(elapsed, 1),
        "temp_dir": args.temp_dir,
        "root_pids": args.pid,
        "processes": len(seen),
        "total_pct_of_one_core": pct(sum(ticks.values())),
        "groups": groups,
        "machine_busy_pct_of_one_core": round(
            100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1), 1
        ),
        "machine_cores": os.cpu_count(),
    }
    if args.threads:  # threads of processes seen from the start (first sample) on
        result["threads"] = {k: pct(t) for k, t in busiest}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
