"""Where a server's CPU time goes under streaming load (for closing the gap with vLLM).

    python bench/profile_server.py --server ours --model gemma --concurrency 16
    python bench/profile_server.py --server ours --py-spy ingress,replica,proxy
    python bench/profile_server.py --server ours --env RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=1

Starts one server as bench/llm_bench.py does (same model, engine kwargs and env), warms
it up, then runs one closed-loop streaming level while it samples the CPU time of every
process the server started (grouped by role: engine core, model replica, ingress
replica, Serve proxy, Ray's own daemons, ...). On a 2-core machine the engine core
holds one core, so every CPU-second the serving path spends elsewhere competes with
the rest of the stack for the other: CPU ms per output token, per role, is the figure
to shrink. With --py-spy, py-spy records the named roles during the level and the
top frames of each are printed (raw files in --out).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpu import by_role, per_token, role_of, server_processes, snapshot
from llm_bench import PLANS, QUICK_PLAN, resolve_model
from load import make_prompts, run_level, warm_up
from servers import SERVERS, VARIANTS, Server


def pin_serving(server: Server, engine_cpus: set[int]) -> dict[str, list[int]]:
    """Moves every thread of every process but the engine's compute process off the
    engine's compute cores, so the serving path never preempts the forward pass. The
    compute process is vLLM's model worker; with the engine as one process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0) there is none, and the engine core computes: it
    is then put on `engine_cpus` (vLLM binds nothing in that layout)."""
    others = sorted(set(os.sched_getaffinity(0)) - engine_cpus)
    procs = server_processes(server)
    one_process = not any(role_of(p) == "engine worker" for p in procs)
    pinned: dict[str, list[int]] = {}
    for p in procs:
        role = role_of(p)
        if role == "engine worker":
            continue  # vLLM bound it itself
        cpus = engine_cpus if one_process and role == "engine core" else set(others)
        for tid in (
            os.listdir(f"/proc/{p.pid}/task") if os.path.isdir(f"/proc/{p.pid}/task") else ()
        ):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass
        pinned.setdefault(role, []).append(p.pid)
    return {"serving_cpus": others, "engine_cpus": sorted(engine_cpus), "roles": sorted(pinned)}


def pids_of(server: Server, role: str) -> list[int]:
    return [p.pid for p in server_processes(server) if role_of(p) == role]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="ours", choices=[*SERVERS, *VARIANTS])
    ap.add_argument("--model", default="gemma", choices=["tiny", "gemma"])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--env", action="append", default=[], help="K=V for every process")
    ap.add_argument(
        "--app-arg",
        action="append",
        default=[],
        help="K=JSON, an argument of our LLM app (e.g. stream_interval_ms=0)",
    )
    ap.add_argument(
        "--py-spy",
        default="",
        help="comma list of roles: ingress, replica, proxy, engine (py-spy must be installed)",
    )
    ap.add_argument("--out", default="/tmp/profile-server")
    ap.add_argument(
        "--idle-s",
        type=float,
        default=15.0,
        help="first measure the idle stack's CPU for this long (0: skip)",
    )
    ap.add_argument(
        "--pin",
        default="",
        help="engine compute CPUs, e.g. 0: after warm-up "
        "every other process of the server is kept off them (see pin_serving)",
    )
    args = ap.parse_args()
    model = resolve_model(args.model)
    plan = PLANS.get(args.model, QUICK_PLAN)
    max_tokens = args.max_tokens or plan["max_tokens"]
    extra = dict(kv.split("=", 1) for kv in args.env)
    app_args = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.app_arg)}
    server = Server(args.server, model, extra_env=extra, app_args=app_args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = make_prompts(64, plan["prompt_words"], seed=0)
    report: dict = {
        "server": args.server,
        "model": args.model,
        "env": extra,
        "app_args": app_args,
        "concurrency": args.concurrency,
    }
    spies: list[subprocess.Popen] = []
    try:
        server.start()
        server.wait_ready(600)
        asyncio.run(warm_up(server.base_url, model.name, prompts, max_tokens, timeout_s=600))
        if args.pin:
            report["pinned"] = pin_serving(server, {int(c) for c in args.pin.split(",")})
        names = {
            "ingress": "ingress replica",
            "replica": "model replica",
            "proxy": "serve proxy",
            "engine": "engine core",
            "worker": "engine worker",
            "api": "vllm api server",
            "rayllm": "rayllm ingress",
        }
        for short in filter(None, args.py_spy.split(",")):
            for pid in pids_of(server, names[short]):
                spies.append(
                    subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--nonblocking",
                            "--output",
                            str(out / f"{short}-{pid}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        if args.idle_s:
            # What the stack costs with no request at all (control loops, health
            # checks, metrics): on a 2-core machine it is taken from the engine.
            idle0 = snapshot(server)
            time.sleep(args.idle_s)
            report["idle_cpu_cores_by_role"] = {
                k: round(v / args.idle_s, 3)
                for k, v in by_role(idle0, snapshot(server)).items()
                if v > 0
            }
        before = snapshot(server)
        t0 = time.monotonic()
        summary = asyncio.run(
            run_level(
                server.base_url,
                model.name,
                prompts,
                concurrency=args.concurrency,
                requests=args.requests,
                max_tokens=max_tokens,
                stream=True,
                time_budget_s=300,
            )
        )
        wall = time.monotonic() - t0
        after = snapshot(server)
        for s in spies:
            s.send_signal(2)
        for s in spies:
            try:
                s.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.kill()
        roles = by_role(before, after)
        tokens = summary["output_tokens"] or 1
        report.update(
            {
                "summary": {
                    k: summary[k]
                    for k in (
                        "output_tok_s",
                        "ttft_ms",
                        "itl_ms",
                        "tpot_ms_mean",
                        "errors",
                        "text_chunks_per_request",
                    )
                },
                "wall_s": round(wall, 2),
                "output_tokens": tokens,
                "cpu_s_by_role": {k: round(v, 2) for k, v in roles.items()},
                "cpu": per_token(roles, tokens),
                "cpu_share_of_wall": {k: round(v / wall, 3) for k, v in roles.items()},
            }
        )
    finally:
        report["stop"] = server.stop()
        server.cleanup_files()
    print(json.dumps(report, indent=2))
    for f in sorted(out.glob("*.txt")):
        print(f"== top frames (self) of {f.name}")
        print(top_frames(f))
    return 0


def top_frames(path: Path, n: int = 25) -> str:
    """py-spy's raw format: 'frame;frame;... count' per line. Sums self time by leaf
    and inclusive time by any frame of our code or of Ray Serve/vLLM."""
    leaf: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        leaf[frames[-1]] += c
    rows = [f"{100 * c / max(total, 1):5.1f}%  {f[:150]}" for f, c in leaf.most_common(n)]
    return f"{total} samples\n" + "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
