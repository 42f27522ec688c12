"""Tiny, randomly initialised FLUX text-to-image pipeline for tests and the CPU default.

No small real text-to-image model ships as a package, and the test machines have no
model hub access, so this builds one from nothing in seconds: the directory layout and
component classes of FLUX.1-schnell (``FluxPipeline``: ``FluxTransformer2DModel``,
``AutoencoderKL``, ``CLIPTextModel`` + ``CLIPTokenizer``, ``T5EncoderModel`` + T5
tokenizer, ``FlowMatchEulerDiscreteScheduler``), loaded by
``DiffusionPipeline.from_pretrained(dir)`` like the real one, under 1 MB on disk.
Its images are noise; only the plumbing is real.

Shape rules that must hold (or the pipeline fails at the first call): transformer
``in_channels`` = 4 x VAE ``latent_channels`` (latents are packed 2x2);
``joint_attention_dim`` = T5 ``d_model``; ``pooled_projection_dim`` = CLIP
``hidden_size``; the rope axes sum to ``attention_head_dim``. Four VAE blocks give
the real model's scale factor of 8, so sizes must be multiples of 16 as for schnell.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path
from typing import TYPE_CHECKING

from deployments.models.build_once import build_once

if TYPE_CHECKING:  # transformers loads only when a pipeline is built
    from transformers import CLIPTokenizer, T5Tokenizer

MARKER = ".tiny_flux_complete"
CLIP_MAX_LENGTH = 77  # the pipeline pads CLIP input to model_max_length; CLIP has 77 positions
HIDDEN = 32  # CLIP hidden size = T5 d_model = the transformer's text dims


def _clip_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP vocabulary with no merges: every byte is a token (with and
    without the end-of-word suffix), so any text encodes without <unk>."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def _t5_tokenizer() -> T5Tokenizer:
    """Character-level Unigram vocabulary (transformers 5 builds it in memory)."""
    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in chars]
    # extra_ids are T5's span-corruption sentinels; an encoder-only user needs none.
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _write_pipeline(tmp: Path, seed: int) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = _clip_tokenizer(), _t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CLIP_MAX_LENGTH,
            projection_dim=HIDDEN,
            # The pooled output is taken at the eos position, found by this id.
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=HIDDEN,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            # Accepted by PretrainedConfig's kwargs; T5Config's annotated signature omits it.
            decoder_start_token_id=0,  # type: ignore[call-arg]
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )
    )
    # diffusers leaves its models', scheduler's and pipeline's __init__ unannotated.
    vae = AutoencoderKL(  # type: ignore[no-untyped-call]
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[4, 4, 4, 4],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        # Mid-block attention over a 1024x1024 image's 128x128 latent (16k tokens) took
        # most of the decode time on CPU, for noise either way.
        mid_block_add_attention=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,  # schnell's values
    )
    transformer = FluxTransformer2DModel(  # type: ignore[no-untyped-call]
        patch_size=1,
        in_channels=4 * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        axes_dims_rope=[4, 6, 6],
        guidance_embeds=False,  # as schnell: guidance_scale is ignored
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=False,  # schnell's
    )
    pipe = FluxPipeline(  # type: ignore[no-untyped-call]
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    # Saved in float32 (torch's default): every CPU runs it natively; the server
    # picks bf16 only on CUDA.
    # mypy resolves `diffusers.FluxPipeline` to diffusers' dummy placeholder class.
    pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]


def build_tiny_flux(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Builds (or reuses) a tiny random FLUX pipeline directory.

    Idempotent and safe against concurrent builders (`build_once`).

    Args:
        out_dir: Where the pipeline directory should be.
        seed: Seed of the random weights; the same seed gives the same weights.

    Returns:
        The absolute path of the pipeline directory.

    Raises:
        ValueError: `out_dir` holds a build with other parameters.
        FileExistsError: `out_dir` is a non-empty directory that is not a build.
    """
    return build_once(
        out_dir,
        marker=MARKER,
        params={"seed": seed},
        what="tiny flux",
        write=lambda tmp: _write_pipeline(tmp, seed),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_flux(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()
