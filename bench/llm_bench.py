"""LLM serving benchmark: this project vs. `vllm serve` vs. Ray Serve LLM, same model,
same engine arguments, same thread settings, one server at a time on loopback.

    python bench/llm_bench.py --quick                  # tiny model, c=1,4: < 5 min
    python bench/llm_bench.py                          # tiny + Gemma 270M, c=1,4,16 (+64 on a GPU)
    python bench/llm_bench.py --models gemma --servers vllm,ours --out bench/results

Writes bench/results/<timestamp>.json and .md and prints the Markdown. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo

import cpu
import psutil
from load import make_prompts, prioritize_client, run_level, warm_up
from servers import (
    DEFAULT_SERVERS,
    MARKER,
    REPO,
    SERVERS,
    VARIANTS,
    ModelSpec,
    Server,
    engine_env,
    ray_auth_env,
)

MODELS = {
    # name, source, engine kwargs (as serve_config.yaml / tests use), KV cache GiB
    "tiny": (
        "bench/tiny-llama",
        "fixture:tiny-llama?seed=0",
        {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True},
        1,
    ),
    "gemma": (
        "google/gemma-3-270m",
        "package:gemma3-270m",
        # As serve_config.yaml asks: bf16 where the CPU computes it natively, else
        # float32 (deployments/dtype.py), made concrete below for every server alike.
        {"max_model_len": 4096, "dtype": "bfloat16-or-float32", "enforce_eager": True},
        2,
    ),
}
# Per model: max_tokens, prompt words, requests per level = max(min_requests,
# per_client * concurrency), time budget per level (s).
PLANS = {
    "tiny": {
        "max_tokens": 128,
        "prompt_words": 48,
        "min_requests": 16,
        "per_client": 8,
        "level_budget_s": 60,
    },
    "gemma": {
        "max_tokens": 64,
        "prompt_words": 48,
        "min_requests": 8,
        "per_client": 2,
        "level_budget_s": 90,
    },
}
QUICK_PLAN = {
    "max_tokens": 64,
    "prompt_words": 32,
    "min_requests": 8,
    "per_client": 4,
    "level_budget_s": 30,
}


def has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    )


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    if has_gpu():
        gpus = (
            subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
            .stdout.strip()
            .splitlines()
        )
    import ray
    import vllm

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus,
        "python": platform.python_version(),
        "vllm": vllm.__version__,
        "ray": ray.__version__,
        "load_average_start": os.getloadavg(),
    }


def resolve_model(key: str) -> ModelSpec:
    from deployments.dtype import resolve_dtype
    from deployments.models.sources import resolve_model_source

    name, source, kwargs, kv = MODELS[key]
    return ModelSpec(
        key=key,
        name=name,
        source=source,
        path=resolve_model_source(source),
        # Concrete for vllm serve and Ray Serve LLM, which do not know our value.
        engine_kwargs=resolve_dtype(dict(kwargs), cuda=has_gpu()),
        kv_cache_gib=kv,
    )


def bench_server(
    kind: str,
    model: ModelSpec,
    plan: dict,
    levels: list[int],
    nonstream_level: int,
    args: argparse.Namespace,
    log_dir: Path,
) -> dict:
    server = Server(kind, model, threads_bind=args.threads_bind, gpu=args.gpu)
    report: dict = {"server": kind, "levels": []}
    prompts = make_prompts(64, plan["prompt_words"], seed=args.seed)
    t0 = time.monotonic()
    try:
        server.start()
        report["base_url"] = server.base_url
        report["listed_after_s"] = round(server.wait_ready(args.start_timeout), 1)
        asyncio.run(
            warm_up(
                server.base_url,
                model.name,
                prompts,
                plan["max_tokens"],
                timeout_s=args.start_timeout,
            )
        )
        report["ready_after_s"] = round(time.monotonic() - t0, 1)
        runs = [(c, True) for c in levels] + [(nonstream_level, False)]
        for concurrency, stream in runs:
            requests = max(plan["min_requests"], plan["per_client"] * concurrency)
            before = cpu.snapshot(server)
            summary = asyncio.run(
                run_level(
                    server.base_url,
                    model.name,
                    prompts,
                    concurrency=concurrency,
                    requests=requests,
                    max_tokens=plan["max_tokens"],
                    stream=stream,
                    time_budget_s=plan["level_budget_s"],
                    label=f"{kind} {'stream' if stream else 'non-stream'} c={concurrency}",
                )
            )
            summary["cpu"] = cpu.per_token(
                cpu.by_role(before, cpu.snapshot(server)), summary["output_tokens"]
            )
            report["levels"].append(summary)
            print(
                f"  {kind:6} {summary['mode']:10} c={concurrency:<3} "
                f"{summary['output_tok_s']} tok/s, errors {summary['errors']}",
                flush=True,
            )
    except Exception as e:
        report["failure"] = f"{type(e).__name__}: {e}"[:4000]
        print(f"  {kind}: FAILED {report['failure'][:2000]}", flush=True)
    finally:
        report["thread_binding"] = server.thread_binding()
        report["stop"] = server.stop()
        if server.workdir:
            for log in server.workdir.glob("*.log"):
                shutil.copy(log, log_dir / f"{model.key}-{kind}-{log.name}")
        server.cleanup_files()
        print(
            f"  {kind}: stopped in {report['stop']['stop_s']} s, clean={report['stop']['clean']}",
            flush=True,
        )
    report["total_s"] = round(time.monotonic() - t0, 1)
    return report


def run_embeddings(args: argparse.Namespace, log_dir: Path) -> dict:
    """Hook for the embeddings section: runs bench/embeddings_throughput.py (owned by
    the embeddings benchmark) with its own Ray + Serve stack and reads the JSON it
    prints. Whatever phases it reports (endpoint one-at-a-time / concurrent, and the
    engine called in-process where it measures that) land in the report as they are."""
    script = REPO / "bench" / "embeddings_throughput.py"
    if not script.exists():
        return {"skipped": "bench/embeddings_throughput.py not found"}
    run_id = uuid.uuid4().hex[:12]
    env = {
        **os.environ,
        MARKER: run_id,
        **ray_auth_env(),
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "VLLM_HOST_IP": "127.0.0.1",
    }
    cmd = [
        sys.executable,
        str(script),
        "--start",
        "--engine",
        "--clients",
        "32",
        "--sequential",
        str(args.emb_sequential),
        "--concurrent",
        str(args.emb_concurrent),
    ]
    p = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=args.emb_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    finally:
        leftover = Server("embeddings", None, run_id=run_id)
        leftover.procs = []
        stop = leftover.stop()
    (log_dir / "embeddings.log").write_text(out)
    start = out.rfind("\n{")
    try:
        result = json.loads(out[start + 1 :] if start >= 0 else out)
    except ValueError:
        result = {"failure": f"exit {p.returncode}; no JSON; tail:\n{out[-3000:]}"}
    return {"command": " ".join(cmd[1:]), "result": result, "stop": stop}


LEVEL_COLUMNS = [
    "server",
    "mode",
    "conc",
    "ok",
    "err",
    "out tok/s",
    "req/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p90 ms",
    "ITL p99 ms",
    "TPOT ms",
    "serving CPU ms/tok",
    "start s",
]
RATIO_COLUMNS = [
    "server",
    "mode",
    "conc",
    "baseline",
    "round",
    "tok/s",
    "req/s",
    "TTFT p50",
    "TTFT p50 +ms",
    "TTFT p99",
    "ITL p50",
    "ITL p90",
    "ITL p99",
    "TPOT",
]
# (name, how to read it off a level, "ratio" or "diff")
RATIO_METRICS = [
    ("tok/s", lambda lv: lv["output_tok_s"], "ratio"),
    ("req/s", lambda lv: lv["req_s"], "ratio"),
    ("TTFT p50", lambda lv: lv["ttft_ms"]["p50"], "ratio"),
    ("TTFT p50 +ms", lambda lv: lv["ttft_ms"]["p50"], "diff"),
    ("TTFT p99", lambda lv: lv["ttft_ms"]["p99"], "ratio"),
    ("ITL p50", lambda lv: lv["itl_ms"]["p50"], "ratio"),
    ("ITL p90", lambda lv: lv["itl_ms"]["p90"], "ratio"),
    ("ITL p99", lambda lv: lv["itl_ms"]["p99"], "ratio"),
    ("TPOT", lambda lv: lv["tpot_ms_mean"], "ratio"),
]
RATIO_NOTE = (
    "Ratios ours / baseline (throughput: > 1 is better for us; latency: < 1 is better for us):"
)
EMBEDDINGS_NOTE = (
    "(The engine called in-process is not measured by "
    "bench/embeddings_throughput.py yet: endpoint phases only.)"
)


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"
    return "-" if x is None else str(x)


def _label(s: dict) -> str:
    return s["server"] + (f" #{s['round']}" if s.get("rounds", 1) > 1 else "")


def _compare(ours: dict, base: dict) -> list[float | None]:
    out: list[float | None] = []
    for _, get, how in RATIO_METRICS:
        a, b = get(ours), get(base)
        if a is None or b is None or (how == "ratio" and not b):
            out.append(None)
        else:
            out.append(a / b if how == "ratio" else a - b)
    return out


def ratio_lines(servers: list[dict]) -> list[str]:
    """Ours against each baseline of the same round (servers of one round ran back to
    back, so they shared the machine's state), and with several rounds the median of
    the per-round figures: the figure to quote on a noisy machine."""
    by: dict[tuple[str, int], dict] = {}
    for s in servers:
        by[(s["server"], s.get("round", 1))] = {
            (lv["mode"], lv["concurrency"]): lv for lv in s["levels"]
        }
    rounds = sorted({r for _, r in by})
    # vllm-uniproc first: the same engine without Ray in between, the limit (issue #34).
    baselines = [
        "vllm-uniproc",
        "vllm",
        "rayllm",
        *(v for v, (app, _) in VARIANTS.items() if app != "ours" and v != "vllm-uniproc"),
    ]
    bases = [b for b in baselines if any(k[0] == b for k in by)]
    ours = ["ours", *(v for v, (app, _) in VARIANTS.items() if app == "ours")]
    ours_kinds = [o for o in ours if any(k[0] == o for k in by)]
    if not bases or not ours_kinds:
        return []
    lines = [
        "",
        RATIO_NOTE,
        "",
        _row(RATIO_COLUMNS),
        _row(["---", "---", "--:", "---", "---"] + ["--:"] * len(RATIO_METRICS)),
    ]
    for o in ours_kinds:
        keys = sorted(
            {key for (srv, _), levels in by.items() if srv == o for key in levels},
            key=lambda k: (k[0] != "stream", k[1]),
        )
        for key in keys:
            for b in bases:
                per_round = []
                for r in rounds:
                    ours, base = by.get((o, r), {}).get(key), by.get((b, r), {}).get(key)
                    if not (ours and base):
                        continue
                    per_round.append(_compare(ours, base))
                    if len(rounds) > 1:
                        lines.append(_ratio_row(o, key, b, r, per_round[-1]))
                if per_round:
                    meds = [
                        _median([row[i] for row in per_round]) for i in range(len(RATIO_METRICS))
                    ]
                    lines.append(_ratio_row(o, key, b, "median" if len(rounds) > 1 else 1, meds))
    return lines


def _ratio_row(ours: str, key: tuple, base: str, round_: object, values: list) -> str:
    return _row(
        [ours, key[0], key[1], base, round_]
        + [_cell(x, m[2]) for x, m in zip(values, RATIO_METRICS, strict=False)]
    )


def _median(xs: list[float | None]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _cell(x: float | None, how: str) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if how == "ratio" else f"{x:+.0f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# LLM serving benchmark, {report['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"
        + (f", {'; '.join(m['gpus'])}" if m["gpus"] else ", no GPU")
        + f"; load average at start {m['load_average_start'][0]:.1f}"
        + f"; vLLM {m['vllm']}, Ray {m['ray']}. Mode: {report['mode']}; "
        f"took {report['total_s']:.0f} s. Load client: "
        f"{report.get('client_scheduling', 'normal (runs before 2026-12-02)')}.",
        "",
    ]
    for model in report["models"]:
        spec = model["spec"]
        setup = (
            f"max_tokens {model['plan']['max_tokens']}, ignore_eos, prompts of "
            f"{model['plan']['prompt_words']} words; engine {spec['engine_kwargs']}; "
            f"env {model['engine_env']}"
        )
        lines += [
            f"## {spec['key']}: {spec['name']} ({spec['source']})",
            "",
            setup,
            "",
            _row(LEVEL_COLUMNS),
            _row(["---", "---"] + ["--:"] * 13),
        ]
        for s in model["servers"]:
            if s.get("failure") and not s["levels"]:
                failure = s["failure"].splitlines()[0][:120]
                lines.append(_row([_label(s), f"FAILED: {failure}"] + [""] * 13))
            for lv in s["levels"]:
                lines.append(
                    "| "
                    + " | ".join(
                        _fmt(x)
                        for x in (
                            _label(s),
                            lv["mode"],
                            lv["concurrency"],
                            lv["requests_ok"],
                            lv["errors"],
                            lv["output_tok_s"],
                            lv["req_s"],
                            lv["ttft_ms"]["p50"],
                            lv["ttft_ms"]["p99"],
                            lv["itl_ms"]["p50"],
                            lv["itl_ms"]["p90"],
                            lv["itl_ms"]["p99"],
                            lv["tpot_ms_mean"],
                            (lv.get("cpu") or {}).get("serving_ms_per_token"),
                            s.get("ready_after_s"),
                        )
                    )
                    + " |"
                )
        lines += ratio_lines(model["servers"])
        binding = {_label(s): ", ".join(s.get("thread_binding") or ["?"]) for s in model["servers"]}
        lines += [
            "",
            "vLLM thread binding (from the logs): "
            + "; ".join(f"{k}: {v}" for k, v in binding.items()),
        ]
        leaks = {_label(s): s["stop"] for s in model["servers"]}
        lines += [
            "",
            "Stop and leak check: "
            + "; ".join(
                f"{k}: stopped in {v['stop_s']} s, "
                + (
                    "no process left"
                    if v["clean"] and not v["left_after_graceful_stop"]
                    else f"left after graceful stop {len(v['left_after_graceful_stop'])}, "
                    f"after kill {len(v['left_after_kill'])}"
                )
                for k, v in leaks.items()
            ),
            "",
        ]
    emb = report.get("embeddings")
    if emb:
        lines += ["## Embeddings (bench/embeddings_throughput.py)", ""]
        res = emb.get("result") or emb
        phases = {k: v for k, v in res.items() if isinstance(v, dict) and "sentences_per_s" in v}
        if phases:
            lines += [
                "| phase | clients | sentences/s | vs engine in-process |",
                "|---|--:|--:|--:|",
            ]
            lines += [
                f"| {k} | {v.get('clients', '-')} | {v['sentences_per_s']} | "
                f"{v.get('vs_engine', '-')} |"
                for k, v in phases.items()
            ]
        else:
            lines.append(f"Not measured: {str(res)[:500]}")
        if phases and not any(w in k for k in phases for w in ("engine", "direct", "process")):
            lines += ["", EMBEDDINGS_NOTE]
        stop = emb.get("stop") or {}
        if stop:
            lines += [
                "",
                "Leak check: "
                + (
                    "no process left"
                    if stop["clean"] and not stop["left_after_graceful_stop"]
                    else f"left {stop}"
                ),
            ]
        lines.append("")
    return "\n".join(lines)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, concurrency 1 and 4, few requests (< 5 min)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma list of tiny,gemma, or none (default: both; quick: tiny)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help="comma list of " + ",".join((*SERVERS, *VARIANTS)),
    )
    parser.add_argument(
        "--concurrency",
        default=None,
        help="comma list (default 1,4,16; 1,4,16,64 on a GPU; quick 1,4)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--logs",
        default=None,
        help="where server logs are copied (default: $TMPDIR/llm-bench-logs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="prompt set seed")
    parser.add_argument(
        "--normal-client",
        action="store_true",
        help="leave the load client at normal CPU priority (runs before 2026-12-02); by "
        "default it runs real-time FIFO 1 so that it is not starved by the server under "
        "test (load.prioritize_client)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the servers this many times, interleaved; ratios are "
        "per round, plus their median",
    )
    parser.add_argument(
        "--threads-bind", default="auto", help="VLLM_CPU_OMP_THREADS_BIND for every engine"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=600.0,
        help="bound on one server's start and warm-up (s)",
    )
    parser.add_argument(
        "--embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the embeddings section (default: on, off with --quick)",
    )
    parser.add_argument("--emb-sequential", type=int, default=200)
    parser.add_argument("--emb-concurrent", type=int, default=1024)
    parser.add_argument("--emb-timeout", type=float, default=600.0)
    args = parser.parse_args()
    args.gpu = has_gpu()
    signal.signal(signal.SIGTERM, _interrupt)  # so the running server is stopped
    models = (args.models or ("tiny" if args.quick else "tiny,gemma")).split(",")
    models = [m for m in models if m and m != "none"]
    servers = args.servers.split(",")
    unknown = [m for m in models if m not in MODELS] + [
        s for s in servers if s not in SERVERS and s not in VARIANTS
    ]
    if unknown:
        parser.error(f"unknown model or server: {unknown}")
    if args.concurrency:
        levels = [int(c) for c in args.concurrency.split(",")]
    else:
        levels = [1, 4] if args.quick else ([1, 4, 16, 64] if args.gpu else [1, 4, 16])
    nonstream_level = min(max(levels), 16)
    if args.embeddings is None:
        args.embeddings = not args.quick

    started = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    # Server logs stay out of the repo (bench/results holds only the reports).
    log_dir = Path(args.logs or Path(tempfile.gettempdir()) / "llm-bench-logs") / started
    log_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # Before any server starts (none inherits it): see load.prioritize_client.
    client_scheduling = "normal (--normal-client)" if args.normal_client else prioritize_client()
    report = {
        "started": started,
        "mode": "quick" if args.quick else "full",
        "argv": sys.argv[1:],
        "machine": machine_info(),
        "client_scheduling": client_scheduling,
        "models": [],
        "concurrency": levels,
        "nonstream_concurrency": nonstream_level,
        "logs": str(log_dir),
    }
    for key in models:
        model = resolve_model(key)
        plan = QUICK_PLAN if args.quick else PLANS[key]
        print(f"== {key}: {model.name} from {model.path}", flush=True)
        entry = {
            "spec": {
                "key": key,
                "name": model.name,
                "source": model.source,
                "path": str(model.path),
                "engine_kwargs": model.engine_kwargs,
            },
            "plan": plan,
            "engine_env": engine_env(model, args.threads_bind),
            "servers": [],
        }
        # Rounds interleave the servers (vllm, rayllm, ours, vllm, ...): the machine's
        # speed drifts over minutes, so a baseline is compared within its round.
        for r in range(1, args.rounds + 1):
            for kind in servers:
                result = bench_server(kind, model, plan, levels, nonstream_level, args, log_dir)
                result.update({"round": r, "rounds": args.rounds})
                entry["servers"].append(result)
        report["models"].append(entry)
    if args.embeddings:
        print("== embeddings", flush=True)
        report["embeddings"] = run_embeddings(args, log_dir)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["total_s"] = round(time.monotonic() - t0, 1)
    (out / f"{started}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (out / f"{started}.md").write_text(md)
    print(md)
    print(f"wrote {out / started}.json, .md (server logs in {log_dir})")
    clean = all(s["stop"]["clean"] for m in report["models"] for s in m["servers"]) and (
        report.get("embeddings") or {}
    ).get("stop", {}).get("clean", True)
    failed = any(s.get("failure") for m in report["models"] for s in m["servers"])
    return 0 if clean and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
