"""Random LoRA adapters in PEFT format, for tests of model versions as adapters.

Serving a model version as a LoRA adapter needs adapter directories that vLLM's LoRA
loader reads like any trained one (``adapter_config.json`` and
``adapter_model.safetensors``, tensors named ``base_model.model.<module>.lora_A.weight``
and ``...lora_B.weight``), but the test machines have no model hub access. This module
builds one from a seed, for any Llama-like base (the tiny Llama fixture, Gemma 3): it
reads the base's own checkpoint for the names and shapes of the attention and MLP
projections, so nothing about the architecture is hard-coded.

A freshly initialised PEFT adapter has ``lora_B = 0`` and changes nothing. Here both
factors are random, scaled so each projection's update ``alpha / r * B @ A`` has
``strength`` times the spread of the base weight it adds to: with the default of 1,
greedy output differs from the base's and between seeds. The weights come from numpy's
PCG64 generator, so a seed gives the same adapter on every machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deployments.models.build_once import build_once

MARKER = ".tiny_lora_complete"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _targets(base_dir: Path) -> dict[str, tuple[int, int, Path, str]]:
    """{module name: (out, in, file, tensor name)} of every target projection in the
    base checkpoint."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                module, _, leaf = name.rpartition(".")
                if leaf == "weight" and module.rpartition(".")[2] in TARGET_MODULES:
                    out_dim, in_dim = f.get_slice(name).get_shape()
                    shapes[module] = (out_dim, in_dim, file, name)
    if not shapes:
        raise ValueError(f"{base_dir} has no {'/'.join(TARGET_MODULES)} weights in safetensors")
    return shapes


def _write_adapter(
    tmp: Path, base_dir: Path, seed: int, rank: int, alpha: float, strength: float
) -> None:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rng = np.random.Generator(np.random.PCG64(seed))
    targets = _targets(base_dir)
    tensors = {}
    for module, (out_dim, in_dim, file, name) in sorted(targets.items()):
        with safe_open(str(file), framework="pt") as f:  # bf16 has no numpy dtype
            base_std = float(f.get_tensor(name).float().std())
        # (B @ A)_ij sums `rank` products of N(0, 1/rank) and N(0, b^2) draws: std b.
        a = rng.standard_normal((rank, in_dim)) / np.sqrt(rank)
        b = rng.standard_normal((out_dim, rank)) * (strength * base_std * rank / alpha)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.astype(np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.astype(np.float32)
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted({m.rpartition(".")[2] for m in targets}),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))


def build_lora(
    out_dir: str | Path,
    base_dir: str | Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: float = 16,
    strength: float = 1.0,
) -> Path:
    """Build (or reuse) a random LoRA adapter for the model at `base_dir`; return its path.

    Raises:
        ValueError: the base has no target projections in safetensors files, or
            `out_dir` holds an adapter built with other parameters.
    """
    base = Path(base_dir).resolve()
    params = {"seed": seed, "rank": rank, "alpha": alpha, "strength": strength, "base": str(base)}
    return build_once(
        out_dir,
        marker=MARKER,
        params=params,
        what="tiny lora",
        write=lambda tmp: _write_adapter(tmp, base, seed, rank, alpha, strength),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("base_dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--strength", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(
        build_lora(
            args.out_dir,
            args.base_dir,
            seed=args.seed,
            rank=args.rank,
            alpha=args.alpha,
            strength=args.strength,
        )
    )


if __name__ == "__main__":
    main()
