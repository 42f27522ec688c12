"""Does vLLM's CPU build serve LoRA adapters, and what do they cost? In-process AsyncLLM.

For the tiny Llama fixture, then Gemma 3 270M (when `package:gemma3-270m` resolves),
each with two random adapters (deployments/models/tiny_lora.py, seeds 1 and 2, rank 8):

  a. greedy output (16 tokens, one fixed prompt) of base, adapter 1 and adapter 2,
     twice each: the same on repeat, and the three different;
  b. load cost: `add_lora` time, the first request with an added adapter, the first
     request with one never added (vLLM loads it on the way), and a base request;
  c. throughput: `--concurrency` requests x `--tokens` tokens (ignore_eos), base,
     adapter 1 and mixed (base/adapter 1/adapter 2 in turn), and base on a second
     engine started without `enable_lora` (does enabling LoRA slow base requests?);
     `--rounds` interleaved rounds, median tokens/s;
  d. prefill: one `--prefill-tokens` prompt, one output token, base vs adapter.

Engine: enable_lora, max_loras=2, max_lora_rank=8, enforce_eager, max_model_len 512,
dtype float32 (tiny) or bfloat16 (Gemma, as serve_config.yaml), VLLM_CPU_KVCACHE_SPACE=1.
Results go to bench/results/lora-<timestamp>.json.

  .venv/bin/python bench/lora_check.py [--no-gemma] [--rounds 3]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
}
PROMPTS = {"tiny": "The model answers a simple question", "gemma": "Write a short poem about"}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def adapters_for(name: str, base: Path) -> list[Path]:
    from deployments.models.sources import cache_root, resolve_model_source
    from deployments.models.tiny_lora import build_lora

    if name == "tiny":
        return [resolve_model_source(f"fixture:tiny-lora?seed={s}") for s in (1, 2)]
    root = cache_root() / "fixtures"
    return [build_lora(root / f"{name}-lora-seed{s}", base, seed=s) for s in (1, 2)]


async def check_model(name: str, base: Path, dtype: str, args: argparse.Namespace) -> dict:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    paths = adapters_for(name, base)
    loras = [LoRARequest(f"seed{s}", s, str(p)) for s, p in zip((1, 2), paths, strict=True)]
    common = dict(model=str(base), dtype=dtype, enforce_eager=True, max_model_len=512)
    result: dict[str, Any] = {"base": str(base), "dtype": dtype, "adapters": list(map(str, paths))}
    counter = iter(range(10**9))

    async def run(engine: Any, ids: list[int], sp: Any, lora: Any = None) -> list[int]:
        out: list[int] = []
        async for step in engine.generate(
            {"prompt_token_ids": ids}, sp, f"r{next(counter)}", lora_request=lora
        ):
            out.extend(step.outputs[0].token_ids)
        return out

    async def throughput(engine: Any, ids: list[int], pick: list[Any]) -> float:
        sp = SamplingParams(
            max_tokens=args.tokens,
            temperature=0,
            ignore_eos=True,
            output_kind=RequestOutputKind.DELTA,
        )
        start = time.perf_counter()
        outs = await asyncio.gather(
            *(run(engine, ids, sp, pick[i % len(pick)]) for i in range(args.concurrency))
        )
        return sum(map(len, outs)) / (time.perf_counter() - start)

    def start(**extra: Any) -> tuple[Any, float]:
        t = time.perf_counter()
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**common, **extra))
        return engine, time.perf_counter() - t

    # Both engines up at once, so that every round measures them under the same load
    # (the CPUs are shared).
    plain, took = start()
    result["no_lora_engine_start_s"] = round(took, 1)
    engine, took = start(enable_lora=True, max_loras=2, max_lora_rank=8)
    result["lora_engine_start_s"] = round(took, 1)
    ids = list(engine.get_tokenizer().encode(PROMPTS[name]))
    tok = engine.get_tokenizer()
    greedy = SamplingParams(max_tokens=16, temperature=0, output_kind=RequestOutputKind.DELTA)
    await run(engine, ids, greedy)  # warm-up
    # b. load cost (a fresh engine: neither adapter loaded yet).
    t = time.perf_counter()
    await run(engine, ids, greedy)
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    await engine.add_lora(loras[0])
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    await run(engine, ids, greedy, loras[0])
    first_added_s = time.perf_counter() - t
    t = time.perf_counter()
    await run(engine, ids, greedy, loras[1])  # never added: loaded inside the step
    first_lazy_s = time.perf_counter() - t
    t = time.perf_counter()
    await run(engine, ids, greedy, loras[1])
    second_s = time.perf_counter() - t
    result["load_ms"] = {
        k: round(v * 1000, 1)
        for k, v in dict(
            base_request=base_s,
            add_lora=add_s,
            first_request_after_add_lora=first_added_s,
            first_request_not_added=first_lazy_s,
            second_request_same_adapter=second_s,
        ).items()
    }
    log(f"{name}: load {result['load_ms']}")
    # a. greedy outputs, twice each.
    outputs = {}
    for label, lora in (("base", None), ("seed1", loras[0]), ("seed2", loras[1])):
        runs = [await run(engine, ids, greedy, lora) for _ in range(2)]
        outputs[label] = {"ids": runs[0], "text": tok.decode(runs[0]), "same": runs[0] == runs[1]}
    result["greedy"] = outputs
    result["greedy_same_on_repeat"] = all(o["same"] for o in outputs.values())
    result["greedy_all_differ"] = len({tuple(o["ids"]) for o in outputs.values()}) == 3
    log(f"{name}: greedy {json.dumps({k: v['text'] for k, v in outputs.items()})}")
    # c. throughput, kinds interleaved per round.
    kinds = {
        "no_lora_engine_base": (plain, [None]),
        "base": (engine, [None]),
        "adapter": (engine, [loras[0]]),
        "mixed": (engine, [None, *loras]),
    }
    await throughput(plain, ids, [None])  # warm-up
    rates_by: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind, (eng, pick) in kinds.items():
            rates_by[kind].append(round(await throughput(eng, ids, pick), 1))
    med = {k: round(statistics.median(v), 1) for k, v in rates_by.items()}
    result["tokens_per_s"] = {"median": med, "all": rates_by}
    result["ratio_adapter_over_base"] = round(med["adapter"] / med["base"], 3)
    result["ratio_mixed_over_base"] = round(med["mixed"] / med["base"], 3)
    result["ratio_lora_engine_base_over_no_lora_base"] = round(
        med["base"] / med["no_lora_engine_base"], 3
    )
    log(f"{name}: tokens/s {med}")
    # d. prefill: one long prompt, one token (vLLM's CPU LoRA ops gather a copy of
    # the adapter's weights per token).
    long_ids = (ids * (args.prefill_tokens // len(ids) + 1))[: args.prefill_tokens]
    one = SamplingParams(max_tokens=1, temperature=0)
    prefill: dict[str, list[float]] = {"base": [], "adapter": []}
    for _ in range(args.rounds):
        for kind, lora in (("base", None), ("adapter", loras[0])):
            t = time.perf_counter()
            await run(engine, long_ids, one, lora)
            prefill[kind].append(round((time.perf_counter() - t) * 1000, 1))
    result["prefill_ms"] = {
        "prompt_tokens": len(long_ids),
        "median": {k: statistics.median(v) for k, v in prefill.items()},
        "all": prefill,
    }
    log(f"{name}: prefill {result['prefill_ms']['median']} ms for {len(long_ids)} tokens")
    engine.shutdown()
    plain.shutdown()
    return result


async def main_async(args: argparse.Namespace) -> dict:
    import vllm

    from deployments.models.sources import resolve_model_source

    results: dict[str, Any] = {
        "vllm": vllm.__version__,
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "errors": {},
    }
    models = [("tiny", lambda: resolve_model_source("fixture:tiny-llama"), "float32")]
    if not args.no_gemma:
        models.append(("gemma", lambda: resolve_model_source("package:gemma3-270m"), "bfloat16"))
    for name, resolve, dtype in models:
        try:
            results[name] = await check_model(name, resolve(), dtype, args)
        except Exception as exc:  # report, and go on to the next model
            log(f"{name} FAILED: {exc!r}")
            results["errors"][name] = repr(exc)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-gemma", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=448)
    args = parser.parse_args()
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    results = asyncio.run(main_async(args))
    out = Path(__file__).parent / "results" / f"lora-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
