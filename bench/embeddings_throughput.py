"""Embeddings throughput through the HTTP endpoint: one request at a time versus many
concurrent clients, one sentence per request (what dynamic batching is for), and the
same two phases against the engine called directly in-process (the baseline: what the
HTTP + Serve path costs on top).

    python bench/embeddings_throughput.py --base-url http://127.0.0.1:8000/v1/openai
    python bench/embeddings_throughput.py --start      # own Ray + Serve + MiniLM app
    python bench/embeddings_throughput.py --start --engine   # + the in-process baseline
    python bench/embeddings_throughput.py --start --engine --env VLLM_ENABLE_V1_MULTIPROCESSING=1
        # the same with the replica's (and the baseline's) environment changed
    python bench/embeddings_throughput.py --start --engine --direct --rounds 3
        # + the ingress replica's own HTTP server (no Serve proxy), 3 rounds, medians
        #   (bench/results/embeddings-<time>.json)
    python bench/embeddings_throughput.py --start --engine --inputs 8
        # 8 sentences per request: what batching requests could gain at most

--start runs the stack as scripts/serve.sh ships it (Serve's throughput mode, the
one-node background periods of scripts/single_node.env); a value already in the
environment wins (RAY_SERVE_THROUGHPUT_OPTIMIZED=0: Serve's classic data plane).

With --start (or --ray-address for a running cluster) it also reads the engine's
batch sizes from the replica (`stats()`), per phase; with --start, also the CPU time
per request of every process of the stack, by role (bench/cpu.py's roles).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
APP = "all-minilm-l6-v2"


def _sentence(i: int) -> str:
    return f"Sentence number {i} is about cats, markets and the weather today."


def _inputs(i: int, per_request: int) -> str | list[str]:
    """Request i's input: one sentence (a string), or `per_request` of them (a list)."""
    if per_request == 1:
        return _sentence(i)
    return [_sentence(i * per_request + k) for k in range(per_request)]


async def _one_client(
    client: httpx.AsyncClient, url: str, model: str, ids: list[int], per_request: int = 1
) -> None:
    for i in ids:
        r = await client.post(
            url,
            json={
                "model": model,
                "input": _inputs(i, per_request),
                "encoding_format": "base64",
            },
        )
        r.raise_for_status()


async def run_phase(
    base_url: str,
    model: str,
    total: int,
    clients: int,
    api_key: str | None = None,
    per_request: int = 1,
) -> float:
    """Sends `total` requests of `per_request` sentences each from `clients` concurrent
    clients, each waiting for its answer before sending the next; returns sentences
    per second."""
    url = f"{base_url}/embeddings"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=headers) as client:
        await _one_client(client, url, model, [0], per_request)  # connection, replica warm
        shares = [list(range(c, total, clients)) for c in range(clients)]
        start = time.perf_counter()
        await asyncio.gather(*(_one_client(client, url, model, s, per_request) for s in shares))
        return total * per_request / (time.perf_counter() - start)


# KEY=VALUE pairs (--env) laid over the MiniLM entry's replica environment, for the
# in-process baseline and the served application alike: a layout to compare.
ENV_OVERRIDES: dict[str, str] = {}


def _app_args() -> dict:
    import yaml

    config = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "serve_config.yaml").read_text()
    )
    args = next(a for a in config["applications"] if a["name"] == APP)["args"]
    if ENV_OVERRIDES:
        options = args.setdefault("deployment", {}).setdefault("ray_actor_options", {})
        env = options.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.update(ENV_OVERRIDES)
    return args


async def engine_phases(
    sequential: int, concurrent: int, clients: int, per_request: int = 1
) -> dict:
    """The baseline: the application's own engine class, built from serve_config.yaml's
    MiniLM entry, called in this process the way the replica calls it (tokenize, then
    embed one request's inputs), with no HTTP, ingress or Serve hop. Same sentences,
    same one-at-a-time and `clients`-concurrent shapes as the HTTP phases."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from deployments.embeddings.config import EmbeddingAppConfig
    from deployments.embeddings.engine import VLLMEmbeddingEngine
    from deployments.embeddings.pooling import resolve_pooling
    from deployments.models.sources import resolve_model_source

    args = _app_args()
    # The replica's environment (KV cache size, thread binding), as Serve would set it.
    env = (
        args.get("deployment", {})
        .get("ray_actor_options", {})
        .get("runtime_env", {})
        .get("env_vars", {})
    )
    os.environ.update({k: str(v) for k, v in env.items()})
    # And the threads Ray gives the replica (OMP_NUM_THREADS = its num_cpus, at least
    # 1, unless its env sets it; the engine's `cpu_threads` is applied by the engine
    # class itself): the same engine with the same threads, so that the ratio measures
    # the serving path, not a different thread count.
    num_cpus = args.get("deployment", {}).get("ray_actor_options", {}).get("num_cpus", 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(num_cpus))))
    config = EmbeddingAppConfig.model_validate(args)
    engine_config = config.engine.for_model(config.model)
    path = await asyncio.to_thread(resolve_model_source, config.model_source)
    spec = resolve_pooling(path, engine_config.pooling, engine_config.normalize)
    engine = VLLMEmbeddingEngine(engine_config, str(path), spec)
    await engine.start()
    counter = iter(range(10**9))

    async def one(i: int) -> None:
        inputs = _inputs(i, per_request)
        texts = [inputs] if isinstance(inputs, str) else inputs
        ids = await asyncio.to_thread(engine.tokenize, texts, None)
        await engine.embed(ids, f"bench-{next(counter)}")

    async def client(ids: list[int]) -> None:
        for i in ids:
            await one(i)

    report = {}
    try:
        await one(0)  # warm
        for name, total, n in (
            ("engine_one_at_a_time", sequential, 1),
            (f"engine_concurrent_{clients}", concurrent, clients),
        ):
            shares = [list(range(c, total, n)) for c in range(n)]
            start = time.perf_counter()
            await asyncio.gather(*(client(s) for s in shares))
            report[name] = {
                "requests": total,
                "clients": n,
                "sentences_per_s": round(total * per_request / (time.perf_counter() - start), 1),
            }
    finally:
        engine.shutdown()
    return report


def start_stack() -> str:
    """A local Ray + Serve with the ingress and the MiniLM application as in
    serve_config.yaml, in the mode scripts/serve.sh ships (Serve's throughput mode,
    the one-node background periods; a value already in the environment wins, e.g.
    RAY_SERVE_THROUGHPUT_OPTIMIZED=0 for the classic data plane); returns the API base
    URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from servers import OURS_ENV, SINGLE_NODE_ENV, start_local_serve

    for key, value in {**SINGLE_NODE_ENV, **OURS_ENV}.items():
        os.environ.setdefault(key, value)
    port = start_local_serve()
    from ray import serve

    from deployments.embeddings.builder import build_app as build_embeddings
    from ingress.builder import build_app as build_ingress

    serve.run(build_embeddings(_app_args()), name=APP, route_prefix=None)
    # Loopback only, for this process: no API keys to set up.
    serve.run(
        build_ingress({"catalog_refresh_s": 0.5, "auth": {"enabled": False}}),
        name="openai",
        route_prefix="/",
    )
    return f"http://127.0.0.1:{port}/v1/openai"


def direct_ingress_url() -> str:
    """The API base URL of the ingress replica's own HTTP server (Serve's direct
    ingress, on in its throughput mode): the same app without Serve's proxy in front,
    i.e. what an ingress serving HTTP itself would cost."""
    import psutil
    from ray.serve._private.constants import (
        RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    )

    for p in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica:openai:" not in " ".join(p.cmdline()):
                continue
            ports = [
                c.laddr.port
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
                and RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT
                <= c.laddr.port
                <= RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT
            ]
        except psutil.Error:
            continue
        for port in ports:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return f"http://127.0.0.1:{port}/v1/openai"
    raise SystemExit("--direct: no ingress replica serving HTTP (Serve's direct ingress off?)")


def batch_sizes(app: str) -> Counter[int]:

    from servers import driver_handle

    return Counter(driver_handle(app).stats.remote().result()["batch_sizes"])


def cpu_by_role() -> dict[int, tuple[str, float]]:
    """pid → (role, CPU seconds so far) of this process and its descendants: with
    --start, the whole stack (Ray's daemons, Serve's proxy and replicas, the engine)."""
    import psutil
    from cpu import role_of  # bench/

    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            times = p.cpu_times()
            role = role_of(p)
            if role == "other" and f"ServeReplica:{APP}" in " ".join(p.cmdline()):
                role = "model replica"
        except psutil.Error:
            continue
        out[p.pid] = (
            "client (this process)" if p.pid == me.pid else role,
            times.user + times.system,
        )
    return out


def cpu_ms_per_request(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], requests: int
) -> dict[str, float]:
    from cpu import by_role  # bench/

    spent = by_role(before, after)
    return {k: round(1000 * v / requests, 2) for k, v in spent.items() if v > 0.005}


def _without_rounds(argv: list[str]) -> list[str]:
    """argv without its --rounds option: what each round's process is given."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--rounds":
            skip = True
        elif not arg.startswith("--rounds="):
            out.append(arg)
    return out


def _rates(report: dict[str, Any]) -> dict[str, float]:
    """A round's figures to take medians of: each phase's sentences/s and ratios."""
    out = {}
    for phase, figures in report.items():
        if isinstance(figures, dict) and "sentences_per_s" in figures:
            for key in ("sentences_per_s", "vs_engine", "vs_proxy"):
                if key in figures:
                    out[f"{phase}.{key}"] = figures[key]
    return out


def run_rounds(argv: list[str], rounds: int, out_dir: Path) -> dict[str, Any]:
    """Runs the whole measurement `rounds` times, each round in a process of its own
    (the in-process engine, then a new stack, phase after phase), so every ratio
    compares figures of one round; reports each round and the medians, and writes
    the report to out_dir/embeddings-<time>.json."""
    reports = []
    for r in range(rounds):
        print(f"== embeddings round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        child = subprocess.run(
            [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, check=True
        )
        reports.append(json.loads(child.stdout[child.stdout.rfind("\n{") + 1 :]))
    per_round = [_rates(rep) for rep in reports]
    summary = {
        "command": " ".join(["bench/embeddings_throughput.py", *argv, f"--rounds {rounds}"]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "rounds": reports,
        "median": {
            key: statistics.median(r[key] for r in per_round if key in r) for key in per_round[0]
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"embeddings-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    summary["written_to"] = str(path)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1/openai")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="bearer key for --base-url (default: $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--start", action="store_true", help="start Ray + Serve + the MiniLM app here first"
    )
    parser.add_argument(
        "--ray-address", default=None, help="a running cluster to read batch sizes from"
    )
    parser.add_argument("--app", default=APP, help="application name (batch sizes)")
    parser.add_argument(
        "--sequential", type=int, default=200, help="requests in the one-at-a-time phase"
    )
    parser.add_argument(
        "--concurrent", type=int, default=1024, help="requests in the concurrent phase"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--inputs",
        type=int,
        default=1,
        help="sentences per request (default 1; more: what batching requests can gain)",
    )
    parser.add_argument(
        "--engine",
        action="store_true",
        help="first measure the engine called in-process (the baseline)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in the MiniLM replica's environment (and the baseline's); repeatable",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="with --start: also measure through the ingress replica's own HTTP server "
        "(Serve's direct ingress), skipping Serve's proxy",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole measurement this many times, each round in a process of "
        "its own; report each round and the medians (also to --out)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds > 1:
        print(
            json.dumps(
                run_rounds(_without_rounds(sys.argv[1:]), args.rounds, Path(args.out)), indent=2
            )
        )
        return
    for kv in args.env:
        key, _, value = kv.partition("=")
        ENV_OVERRIDES[key] = value
    report_env = {"env": dict(ENV_OVERRIDES)} if ENV_OVERRIDES else {}
    if args.engine_only:  # the child of --engine: its JSON is the last stdout line
        result = asyncio.run(
            engine_phases(args.sequential, args.concurrent, args.clients, args.inputs)
        )
        print(json.dumps(result))
        return

    stats = args.start or args.ray_address is not None
    report: dict = {
        "model": args.model,
        "inputs_per_request": args.inputs,
        "load_average": os.getloadavg(),
        **report_env,
    }
    if args.engine:
        # In a process of its own that ends before the Serve stack starts: the two
        # never share the CPUs or memory, and vLLM leaves no state behind in this one.
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--engine-only",
                "--sequential",
                str(args.sequential),
                "--concurrent",
                str(args.concurrent),
                "--clients",
                str(args.clients),
                "--inputs",
                str(args.inputs),
                *(f"--env={kv}" for kv in args.env),
            ],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        report.update(json.loads(child.stdout.strip().splitlines()[-1]))
    if args.start:
        args.base_url = start_stack()
        report["serve_mode"] = (
            "throughput" if os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1" else "classic"
        )
    elif args.ray_address:
        import ray

        ray.init(address=args.ray_address)
    if args.direct and not args.start:
        parser.error("--direct needs --start")
    # (prefix, base URL): Serve's proxy, and with --direct the ingress replica's own
    # HTTP server right after it, phase by phase, so both see the same machine state.
    routes = [("", args.base_url)]
    if args.direct:
        routes.append(("direct_", direct_ingress_url()))
    for phase, total, clients in (
        ("one_at_a_time", args.sequential, 1),
        (f"concurrent_{args.clients}", args.concurrent, args.clients),
    ):
        for prefix, base_url in routes:
            name = prefix + phase
            before = batch_sizes(args.app) if stats else Counter()
            cpu_before = cpu_by_role() if args.start else {}
            rate = asyncio.run(
                run_phase(
                    base_url,
                    args.model,
                    total,
                    clients,
                    None if args.start else args.api_key,
                    args.inputs,
                )
            )
            report[name] = {
                "requests": total,
                "clients": clients,
                "sentences_per_s": round(rate, 1),
            }
            if args.start:  # where the CPU went, per request, by process role
                report[name]["cpu_ms_per_request"] = cpu_ms_per_request(
                    cpu_before, cpu_by_role(), total
                )
            if stats:
                seen = batch_sizes(args.app) - before
                report[name]["batch_sizes"] = dict(sorted(seen.items()))
                report[name]["mean_batch"] = round(
                    sum(k * v for k, v in seen.items()) / max(1, sum(seen.values())), 2
                )
    for phase in ("one_at_a_time", f"concurrent_{args.clients}"):
        base = report.get(f"engine_{phase}")
        for prefix, _ in routes:
            if base and prefix + phase in report:
                report[prefix + phase]["vs_engine"] = round(
                    report[prefix + phase]["sentences_per_s"] / base["sentences_per_s"], 2
                )
        if args.direct:
            report[f"direct_{phase}"]["vs_proxy"] = round(
                report[f"direct_{phase}"]["sentences_per_s"] / report[phase]["sentences_per_s"],
                2,
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
