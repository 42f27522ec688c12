"""Images/s for 1 and N concurrent clients, at one size, through the OpenAI API.

    # against a running server (serve_config.yaml serves the tiny FLUX by default):
    .venv/bin/python bench/images_throughput.py --base-url http://127.0.0.1:8000/v1/openai
    # or start a local Ray with the ingress and the tiny random FLUX pipeline first:
    .venv/bin/python bench/images_throughput.py --start

Each client sends `--requests` requests (n=1, distinct seeds) one after another; all
clients start together. images/s = images received / wall time of the level. With
`--start`, the replica's batch sizes for each level are printed too (they show how
many concurrent requests shared a pipeline call).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_APP = "bench-tiny-flux"


def start_local(
    replica_cpus: float, max_batch_images: int, batch_wait_s: float
) -> tuple[str, object]:
    """Starts Ray + Serve on loopback with the ingress and the tiny FLUX app.

    Returns:
        The API base URL and the image application's handle (for batch stats).
    """
    from servers import start_local_serve

    port = start_local_serve()
    from ray import serve

    from deployments.images.builder import build_app as build_images
    from ingress.builder import build_app as build_ingress

    serve.run(
        build_images(
            {
                "model": "openai-serve/tiny-flux-random",
                "default": True,
                "model_source": "fixture:tiny-flux",
                "engine": {"call_kwargs": {"max_sequence_length": 256}},
                "batching": {
                    "max_batch_images": max_batch_images,
                    "batch_wait_timeout_s": batch_wait_s,
                },
                "deployment": {"ray_actor_options": {"num_cpus": replica_cpus}},
            }
        ),
        name=IMAGE_APP,
        route_prefix=None,
    )
    serve.run(build_ingress({"catalog_refresh_s": 0.5}), name="openai", route_prefix="/")
    from servers import driver_handle

    return f"http://127.0.0.1:{port}/v1/openai", driver_handle(IMAGE_APP)


def run_level(base_url: str, model: str | None, size: str, clients: int, requests: int) -> dict:
    """Runs `clients` concurrent clients of `requests` requests each."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            for k in range(requests):
                body = {
                    "prompt": "A photo of an astronaut riding a horse on Mars.",
                    "size": size,
                    "n": 1,
                    "seed": index * 1000 + k,
                }
                if model:
                    body["model"] = model
                t0 = time.perf_counter()
                r = http.post(f"{base_url}/images/generations", json=body)
                with lock:
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "images": len(latencies),
        "errors": errors[:3],
        "wall_s": round(wall, 2),
        "images_per_s": round(len(latencies) / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1/openai")
    parser.add_argument(
        "--start",
        action="store_true",
        help="start a local Ray + Serve with the tiny FLUX app first",
    )
    parser.add_argument("--model", default=None, help="default: the default image model")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=4, help="per client and level")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="with --start")
    parser.add_argument("--max-batch-images", type=int, default=8, help="with --start")
    parser.add_argument("--batch-wait-s", type=float, default=0.01, help="with --start")
    args = parser.parse_args(argv)

    handle = None
    base_url = args.base_url
    if args.start:
        base_url, handle = start_local(args.replica_cpus, args.max_batch_images, args.batch_wait_s)
    run_level(base_url, args.model, args.size, 1, 2)  # warm-up: first call pays lazy init
    results = []
    for clients in args.concurrency:
        seen = len(handle.stats.remote().result()["recent_batch_sizes"]) if handle else 0
        result = run_level(base_url, args.model, args.size, clients, args.requests)
        if handle is not None:
            result["batch_sizes"] = handle.stats.remote().result()["recent_batch_sizes"][seen:]
        results.append(result)
        print(json.dumps(result), flush=True)
    print(
        f"\n{args.size}: "
        + ", ".join(f"{r['clients']} client(s): {r['images_per_s']} images/s" for r in results)
    )
    if args.start:
        from ray import serve

        serve.shutdown()


if __name__ == "__main__":
    main()
