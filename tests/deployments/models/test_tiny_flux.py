"""The tiny random FLUX fixture: layout as FLUX.1-schnell, small, idempotent, loadable."""

from __future__ import annotations

import json

import pytest

from deployments.models.tiny_flux import MARKER, build_tiny_flux

# FLUX.1-schnell's model_index.json, component by component (transformers 5 names its
# one T5 tokenizer class T5Tokenizer; schnell's file says T5TokenizerFast).
SCHNELL_COMPONENTS = {
    "scheduler": "FlowMatchEulerDiscreteScheduler",
    "text_encoder": "CLIPTextModel",
    "text_encoder_2": "T5EncoderModel",
    "tokenizer": "CLIPTokenizer",
    "tokenizer_2": ("T5Tokenizer", "T5TokenizerFast"),
    "transformer": "FluxTransformer2DModel",
    "vae": "AutoencoderKL",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux", seed=0)


def test_layout_matches_schnell_and_is_small(built):
    index = json.loads((built / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    for component, cls in SCHNELL_COMPONENTS.items():
        assert index[component][1] in (cls if isinstance(cls, tuple) else (cls,))
        assert (built / component).is_dir()
    size = sum(f.stat().st_size for f in built.rglob("*") if f.is_file())
    assert size < 1_000_000
    assert json.loads((built / MARKER).read_text()) == {"seed": 0}


def test_idempotent_and_refuses_foreign_dirs(built, tmp_path):
    mtime = (built / MARKER).stat().st_mtime_ns
    assert build_tiny_flux(built, seed=0) == built
    assert (built / MARKER).stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(ValueError, match="seed"):
        build_tiny_flux(built, seed=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_flux(foreign)
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temp dir left


def test_loads_as_diffusion_pipeline_and_is_seeded(built):
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(built))
    pipe.set_progress_bar_config(disable=True)

    def image(seed: int):
        out = pipe(
            prompt=["a red square"],
            width=96,
            height=64,
            num_inference_steps=2,
            guidance_scale=0.0,
            max_sequence_length=32,
            generator=[torch.Generator().manual_seed(seed)],
        )
        return np.asarray(out.images[0])

    first = image(7)
    assert first.shape == (64, 96, 3)  # height x width: the size is honoured
    assert np.array_equal(first, image(7))
    assert not np.array_equal(first, image(8))


def test_model_source_scheme(monkeypatch, tmp_path):
    from deployments.models.sources import resolve_model_source

    monkeypatch.setenv("OPENAI_SERVE_CACHE", str(tmp_path))
    path = resolve_model_source("fixture:tiny-flux?seed=3")
    assert path == tmp_path / "fixtures" / "tiny-flux-seed3"
    assert json.loads((path / MARKER).read_text()) == {"seed": 3}
