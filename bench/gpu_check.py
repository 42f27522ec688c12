"""One short GPU check of the image path, for a lent machine with no Ray and no hub.

  a. the machine: nvidia-smi -L, torch / diffusers / transformers versions, the device;
  b. this repo's image engine (deployments.images.engine.DiffusersEngine, device
     "auto") on the tiny random FLUX fixture (deployments/models/tiny_flux.py):
     images/s of `run` and `encode` (PNG) at 256x256 batch 1 and 8 and 1024x1024
     batch 1 and 4, 4 steps, after one warm-up per shape;
  c. a FLUX.1-schnell-sized denoiser: diffusers' FluxTransformer2DModel with the real
     schnell transformer config, random bf16 weights, one forward pass at 1024x1024
     for batch 1 and 4 (transformer only: no text encoders, no VAE).

Results go to $OUT/gpu_check.json (when OUT is set) after every part, so a timeout
still leaves what finished, and are printed at the end. Needs stdlib, torch,
diffusers, transformers and this repo's code (plus pydantic, which the engine's
config uses); run from the repo root, e.g. via scripts/gpu_check.sh.

  python3 bench/gpu_check.py              # the GPU check (about a minute on an H100)
  python3 bench/gpu_check.py --cpu-smoke  # tiny fixture only, 64x64, 1 step, on CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

T0 = time.perf_counter()
RESULTS: dict[str, Any] = {"errors": []}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def save() -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def record_error(part: str, exc: BaseException) -> None:
    tb = traceback.format_exc()
    log(f"{part} FAILED: {exc!r}\n{tb}")
    RESULTS["errors"].append({"part": part, "error": repr(exc), "traceback": tb[-4000:]})
    save()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- a. the machine -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        )
        info["nvidia_smi_L"] = (smi.stdout or smi.stderr).strip()
    except Exception as exc:
        info["nvidia_smi_L"] = f"unavailable: {exc!r}"
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    for name in (
        "diffusers",
        "transformers",
        "tokenizers",
        "accelerate",
        "safetensors",
        "huggingface_hub",
        "pydantic",
    ):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:
            info[name] = f"unavailable: {exc!r}"
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_capability"] = f"{props.major}.{props.minor}"
        info["cuda_total_mem_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    info["torch_threads"] = torch.get_num_threads()
    return info


# --- b. this repo's engine on the tiny fixture ----------------------------------------


async def engine_bench(
    model_dir: str, shapes: list[tuple[int, int]], steps: int, reps: int, res: dict[str, Any]
) -> None:
    import torch

    from deployments.images.config import ImageEngineConfig
    from deployments.images.engine import DiffusersEngine, PipelineBatch

    res.update(steps=steps, reps=reps, runs=[])  # filled in place: save() sees progress
    engine = DiffusersEngine(ImageEngineConfig(device="auto"), model_dir)
    t = time.perf_counter()
    await engine.start()
    sync()
    res["load_s"] = round(time.perf_counter() - t, 3)
    pipe = engine._pipe  # a check may look inside
    res["pipeline"] = type(pipe).__name__
    res["device"] = str(pipe.device)
    res["components"] = {
        name: {"device": str(mod.device), "dtype": str(mod.dtype)}
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
        if (mod := getattr(pipe, name, None)) is not None
    }
    log(f"engine loaded in {res['load_s']} s: {res['device']} {res['components']}")
    try:
        for side, batch in shapes:
            row: dict[str, Any] = {"size": f"{side}x{side}", "batch": batch}
            res["runs"].append(row)
            try:
                pb = PipelineBatch(
                    prompts=[f"a red cube number {i}" for i in range(batch)],
                    seeds=list(range(batch)),
                    width=side,
                    height=side,
                    num_inference_steps=steps,
                    guidance_scale=0.0,
                )
                t = time.perf_counter()
                images = await engine.run(pb)  # warm-up (and the first-shape CUDA init)
                await engine.encode(images, "png", None)
                sync()
                row["warmup_s"] = round(time.perf_counter() - t, 3)
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                run_s, enc_s = [], []
                for _ in range(reps):
                    sync()
                    t = time.perf_counter()
                    images = await engine.run(pb)
                    sync()
                    t1 = time.perf_counter()
                    blobs = await engine.encode(images, "png", None)
                    t2 = time.perf_counter()
                    run_s.append(t1 - t)
                    enc_s.append(t2 - t1)
                sizes = [im.size for im in images]
                row["image_sizes_ok"] = len(images) == batch and all(
                    s == (side, side) for s in sizes
                )
                row["png_ok"] = len(blobs) == batch and all(b.startswith(b"\x89PNG") for b in blobs)
                row["png_kib_first"] = round(len(blobs[0]) / 1024, 1)
                r, e = statistics.median(run_s), statistics.median(enc_s)
                row.update(
                    run_s_median=round(r, 4),
                    run_s_all=[round(x, 4) for x in run_s],
                    encode_s_median=round(e, 4),
                    run_images_per_s=round(batch / r, 2),
                    encode_images_per_s=round(batch / e, 2),
                    run_plus_encode_images_per_s=round(batch / (r + e), 2),
                )
                if torch.cuda.is_available():
                    row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                log(f"engine {row}")
                assert row["image_sizes_ok"], f"images are {sizes}, not {side}x{side} x{batch}"
                assert row["png_ok"], "encode did not give one PNG per image"
            except Exception as exc:
                row["error"] = repr(exc)
                record_error(f"engine {side}x{side} b{batch}", exc)
            save()
    finally:
        engine.shutdown()
        del pipe
        engine._pipe = None


def part_b(shapes: list[tuple[int, int]], steps: int, reps: int) -> None:
    import torch

    from deployments.models.tiny_flux import build_tiny_flux

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        t = time.perf_counter()
        model_dir = build_tiny_flux(Path(tmp, "tiny-flux"), seed=0)
        build_s = round(time.perf_counter() - t, 3)
        files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
        log(f"tiny flux built in {build_s} s: {files}")
        RESULTS["tiny_flux_engine"] = {"build_s": build_s, "files": files}
        save()
        asyncio.run(engine_bench(str(model_dir), shapes, steps, reps, RESULTS["tiny_flux_engine"]))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    save()


# --- c. a FLUX.1-schnell-sized transformer --------------------------------------------

SCHNELL_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}


def part_c(
    batches: list[int],
    side: int = 1024,
    steps_per_image: int = 4,
    config: dict[str, Any] = SCHNELL_TRANSFORMER,
    device: str = "cuda",
) -> None:
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    res: dict[str, Any] = {
        "note": "transformer only (no text encoders, no VAE), random bf16 weights, "
        "FLUX.1-schnell transformer config; eager PyTorch, default attention",
        "config": config,
        "size": f"{side}x{side}",
        "runs": [],
    }
    RESULTS["schnell_transformer"] = res
    dev, dtype = torch.device(device), torch.bfloat16
    cuda = dev.type == "cuda"
    chans, text_dim = config["in_channels"], config["joint_attention_dim"]
    pooled_dim = config["pooled_projection_dim"]
    t = time.perf_counter()
    torch.set_default_dtype(dtype)  # build in bf16 directly: no fp32 copy (48 GB)
    try:
        with dev:
            model = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to(device=dev, dtype=dtype).eval().requires_grad_(False)
    sync()
    res["build_s"] = round(time.perf_counter() - t, 2)
    res["params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    res["weights_gib"] = round(
        sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 2
    )
    res["param_dtype"] = str(next(model.parameters()).dtype)
    log(
        f"schnell transformer built in {res['build_s']} s: {res['params_b']}B params, "
        f"{res['weights_gib']} GiB"
    )
    save()

    # Packed latents as in FluxPipeline: VAE /8, then 2x2 patches -> (side/16)^2 tokens.
    lat = side // 16
    seq, text_seq = lat * lat, 256
    try:
        img_ids = FluxPipeline._prepare_latent_image_ids(1, lat, lat, dev, dtype)
    except Exception:
        img_ids = torch.zeros(lat, lat, 3)
        img_ids[..., 1] += torch.arange(lat)[:, None]
        img_ids[..., 2] += torch.arange(lat)[None, :]
        img_ids = img_ids.reshape(seq, 3).to(dev, dtype)
    txt_ids = torch.zeros(text_seq, 3, device=dev, dtype=dtype)
    for batch in batches:
        row: dict[str, Any] = {"batch": batch, "image_tokens": seq, "text_tokens": text_seq}
        res["runs"].append(row)
        try:
            g = torch.Generator(dev).manual_seed(0)

            def rand(*shape: int, g: Any = g) -> Any:
                return torch.randn(*shape, generator=g, device=dev, dtype=dtype)

            kw = {
                "hidden_states": rand(batch, seq, chans),
                "encoder_hidden_states": rand(batch, text_seq, text_dim),
                "pooled_projections": rand(batch, pooled_dim),
                "timestep": torch.full((batch,), 0.75, device=dev, dtype=dtype),  # t/1000
                "img_ids": img_ids,
                "txt_ids": txt_ids,
                "return_dict": False,
            }
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                for _ in range(2):  # warm-up
                    out = model(**kw)[0]
                sync()
                times = []
                for _ in range(5 if batch == 1 else 3):
                    t = time.perf_counter()
                    out = model(**kw)[0]
                    sync()
                    times.append(time.perf_counter() - t)
            assert tuple(out.shape) == (batch, seq, chans), out.shape
            ms = statistics.median(times) * 1000
            row.update(
                ms_per_step_median=round(ms, 1),
                ms_all=[round(x * 1000, 1) for x in times],
                ms_per_step_per_image=round(ms / batch, 1),
                transformer_s_per_image_at_4_steps=round(steps_per_image * ms / batch / 1000, 3),
                transformer_images_per_s_at_4_steps=round(1000 * batch / (steps_per_image * ms), 2),
                peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                output_finite=bool(torch.isfinite(out).all()),
            )
            log(f"schnell transformer {row}")
        except Exception as exc:
            row["error"] = repr(exc)
            record_error(f"schnell transformer b{batch}", exc)
        save()
    del model
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny fixture only, 64x64, 1 step, on CPU; no part c",
    )
    parser.add_argument("--skip-schnell", action="store_true", help="skip part c")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported
    import torch

    RESULTS["mode"] = "cpu-smoke" if args.cpu_smoke else "gpu"
    try:
        RESULTS["machine"] = machine_info()
        log(f"machine {json.dumps(RESULTS['machine'], indent=1)}")
    except Exception as exc:
        record_error("machine", exc)
    save()
    if not args.cpu_smoke and not torch.cuda.is_available():
        RESULTS["errors"].append({"part": "machine", "error": "CUDA is not available"})
        log("CUDA is not available: the engine will run on CPU; skipping part c")

    try:
        if args.cpu_smoke:
            part_b([(64, 1), (64, 2)], steps=1, reps=1)
        else:
            part_b([(256, 1), (256, 8), (1024, 1), (1024, 4)], steps=4, reps=3)
    except Exception as exc:
        record_error("tiny_flux_engine", exc)
    engine = RESULTS.get("tiny_flux_engine", {})
    if (
        not args.cpu_smoke
        and torch.cuda.is_available()
        and (
            not str(engine.get("device", "")).startswith("cuda")
            or engine.get("components", {}).get("transformer", {}).get("dtype") != "torch.bfloat16"
        )
    ):
        RESULTS["errors"].append(
            {"part": "tiny_flux_engine", "error": "device 'auto' did not give cuda + bfloat16"}
        )

    if not (args.cpu_smoke or args.skip_schnell) and torch.cuda.is_available():
        try:
            part_c([1, 4])
        except Exception as exc:
            record_error("schnell_transformer", exc)

    RESULTS["total_s"] = round(time.perf_counter() - T0, 1)
    RESULTS["ok"] = not RESULTS["errors"]
    save()
    print(json.dumps(RESULTS, indent=2, default=str), flush=True)


if __name__ == "__main__":
    main()
