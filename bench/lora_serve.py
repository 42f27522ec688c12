"""LoRA adapters through the whole stack (HTTP → ingress → Serve multiplexing → replica →
vLLM): the first request of an adapter (load on first use) against a warm one, and
streamed throughput of the base version against an adapter version of the same
replica, interleaved rounds, median. The in-process engine figures are
bench/lora_check.py's; this one adds what serving costs on top.

    python bench/lora_serve.py                     # tiny fixture, 3 rounds
    python bench/lora_serve.py --model gemma --concurrency 4 --tokens 32

Results go to bench/results/lora-serve-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
APP = "bench-lora"
ENGINE = {"enable_lora": True, "max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 8}
MODELS = {
    "tiny": {
        "model_source": "fixture:tiny-llama?seed=0",
        "adapter": "fixture:tiny-lora?seed=1&base_seed=0",
        "engine_kwargs": {"dtype": "float32", "max_model_len": 2048},
    },
    "gemma": {
        "model_source": "package:gemma3-270m",
        "adapter": "fixture:gemma-lora?seed=1",
        "engine_kwargs": {"dtype": "bfloat16", "max_model_len": 4096},
    },
}


def start_stack(which: str) -> str:
    """Local Ray + Serve: the ingress and one LLM application with one adapter."""
    sys.path.insert(0, str(REPO))
    from servers import start_local_serve

    port = start_local_serve()
    from ray import serve

    from deployments.llm.builder import build_app as build_llm
    from ingress.builder import build_app as build_ingress

    spec = MODELS[which]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    args = {
        "model": "bench/lora",
        "version": "base",
        "model_source": spec["model_source"],
        "engine": {"engine_kwargs": {**spec["engine_kwargs"], **ENGINE, "enforce_eager": True}},
        "adapters": [{"version": "adapter", "source": spec["adapter"]}],
        "deployment": {"ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}},
    }
    serve.run(build_llm(args), name=APP, route_prefix=None)
    serve.run(
        build_ingress({"catalog_refresh_s": 0.5, "auth": {"enabled": False}}),
        name="openai",
        route_prefix="/",
    )
    return f"http://127.0.0.1:{port}/v1/openai"


async def one(client: httpx.AsyncClient, url: str, model: str, tokens: int) -> int:
    """One streamed completion of exactly `tokens` tokens; returns the tokens counted."""
    body = {
        "model": model,
        "prompt": "The server answers a simple question",
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    used = 0
    async with client.stream("POST", f"{url}/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                used = json.loads(line[6:])["usage"]["completion_tokens"]
    return used


async def throughput(url: str, model: str, concurrency: int, tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        done = await asyncio.gather(*(one(client, url, model, tokens) for _ in range(concurrency)))
        return sum(done) / (time.perf_counter() - start)


async def latency(url: str, model: str) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await one(client, url, model, 16)
        return time.perf_counter() - start


async def run(url: str, args: argparse.Namespace) -> dict:
    base, adapter = "bench/lora:base", "bench/lora:adapter"
    await latency(url, base)  # warm: connections, the replica, the engine
    first = {"base_16_tokens_s": await latency(url, base)}
    first["adapter_first_16_tokens_s"] = await latency(url, adapter)  # loads it
    first["adapter_warm_16_tokens_s"] = await latency(url, adapter)
    rounds: dict[str, list[float]] = {"base": [], "adapter": []}
    for _ in range(args.rounds):
        for name, model in (("base", base), ("adapter", adapter)):
            rounds[name].append(await throughput(url, model, args.concurrency, args.tokens))
    median = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "latency_s": {k: round(v, 3) for k, v in first.items()},
        "tokens_per_s": {"median": median, "all": rounds},
        "ratio_adapter_over_base": round(median["adapter"] / median["base"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    url = start_stack(args.model)
    report = {
        "model": args.model,
        "concurrency": args.concurrency,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        **asyncio.run(run(url, args)),
    }
    out = Path(args.out) / f"lora-serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"written: {out}")
    from ray import serve

    serve.shutdown()


if __name__ == "__main__":
    main()
