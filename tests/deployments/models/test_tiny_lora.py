"""The random LoRA fixture: PEFT layout, the base's shapes, deterministic per seed, and
strong enough that greedy output changes (checked with transformers, no vLLM engine)."""

from __future__ import annotations

import json

import pytest
from safetensors.numpy import load_file

from deployments.models.tiny_llama import build_tiny_llama
from deployments.models.tiny_lora import MARKER, TARGET_MODULES, build_lora


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny-llama", seed=0)


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    return {seed: build_lora(root / f"seed{seed}", base, seed=seed) for seed in (1, 2)}


def test_peft_layout_with_the_base_shapes(base, adapters):
    built = adapters[1]
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [MARKER, "adapter_config.json", "adapter_model.safetensors"]
    )
    config = json.loads((built / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["bias"] == "none"
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert sorted(config["target_modules"]) == sorted(TARGET_MODULES)

    model = json.loads((base / "config.json").read_text())
    hidden, inter = model["hidden_size"], model["intermediate_size"]
    kv = model["num_key_value_heads"] * hidden // model["num_attention_heads"]
    out_in = {
        "q_proj": (hidden, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, hidden),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    tensors = load_file(built / "adapter_model.safetensors")
    assert len(tensors) == 2 * len(TARGET_MODULES) * model["num_hidden_layers"]
    for layer in range(model["num_hidden_layers"]):
        for module, (out_dim, in_dim) in out_in.items():
            group = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{module}"
            assert tensors[f"{prefix}.lora_A.weight"].shape == (8, in_dim)
            b = tensors[f"{prefix}.lora_B.weight"]
            assert b.shape == (out_dim, 8) and b.dtype.name == "float32" and b.any()


def test_deterministic_per_seed_and_idempotent(base, adapters, tmp_path):
    again = build_lora(tmp_path / "again", base, seed=1)
    weights = "adapter_model.safetensors"
    assert (again / weights).read_bytes() == (adapters[1] / weights).read_bytes()
    assert (adapters[2] / weights).read_bytes() != (adapters[1] / weights).read_bytes()
    mtime = (adapters[1] / MARKER).stat().st_mtime_ns
    assert build_lora(adapters[1], base, seed=1) == adapters[1]
    assert (adapters[1] / MARKER).stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(ValueError, match="seed"):
        build_lora(adapters[1], base, seed=3)


def test_rank_and_a_base_without_projections(base, tmp_path):
    built = build_lora(tmp_path / "r4", base, seed=1, rank=4)
    assert json.loads((built / "adapter_config.json").read_text())["r"] == 4
    tensors = load_file(built / "adapter_model.safetensors")
    assert all(4 in t.shape for t in tensors.values())
    empty = tmp_path / "empty-base"
    empty.mkdir()
    with pytest.raises(ValueError, match="no q_proj"):
        build_lora(tmp_path / "none", empty, seed=1)


def _greedy(base, adapter=None) -> list[int]:
    """Greedy tokens of the base with the adapter merged in (W += alpha/r * B @ A)."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        config = json.loads((adapter / "adapter_config.json").read_text())
        tensors = load_file(adapter / "adapter_model.safetensors")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, a in tensors.items():
                if ".lora_A." in name:
                    module = name.removeprefix("base_model.model.").split(".lora_A.")[0]
                    b = tensors[name.replace(".lora_A.", ".lora_B.")]
                    delta = config["lora_alpha"] / config["r"] * (b @ a)
                    params[f"{module}.weight"] += torch.from_numpy(delta)
    prompt = torch.tensor([[1, 20, 30, 40]])
    out = model.generate(prompt, max_new_tokens=12, do_sample=False)
    return out[0, prompt.shape[1] :].tolist()


def test_greedy_output_differs_from_the_base_and_between_seeds(base, adapters):
    outputs = [_greedy(base), _greedy(base, adapters[1]), _greedy(base, adapters[2])]
    assert len({tuple(o) for o in outputs}) == 3


def test_model_source_builds_on_the_tiny_llama(tmp_path, monkeypatch):
    from deployments.models.sources import resolve_model_source

    monkeypatch.setenv("OPENAI_SERVE_CACHE", str(tmp_path))
    built = resolve_model_source("fixture:tiny-lora?seed=2&base_seed=0&rank=4")
    assert built == tmp_path / "fixtures" / "tiny-lora-seed2-base0-rank4"
    marker = json.loads((built / MARKER).read_text())
    assert marker["base"] == str(tmp_path / "fixtures" / "tiny-llama-seed0")
    assert (marker["seed"], marker["rank"]) == (2, 4)
