"""Build a model directory once, safely, whoever else is building it at the same time.

Several replicas (or test processes) may start on one machine together and each find
the directory missing. Each writes into its own temporary sibling directory and renames
it into place: the rename is atomic, and a loser finds the winner's complete build. A
marker file, written last, records the build's parameters, so its presence means
"complete" and a build with other parameters is refused rather than reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(out_dir: str | Path, *, marker: str, params: dict, what: str,
               write: Callable[[Path], None]) -> Path:
    """Returns the absolute path of the build at `out_dir`, running `write(tmp_dir)` first
    if there is none.

    Raises:
        ValueError: `out_dir` holds a build with other parameters.
        FileExistsError: `out_dir` is a non-empty directory that is not a build.
    """
    out = Path(out_dir).resolve()

    def existing() -> bool:
        path = out / marker
        if not path.is_file():
            return False
        found = json.loads(path.read_text())
        if found != params:
            raise ValueError(f"{out} holds a {what} built with {found}, not {params}; "
                             "pass another directory")
        return True

    if existing():
        return out
    if out.exists() and any(out.iterdir()):
        # Our writes only ever land via rename, so this is someone else's data.
        raise FileExistsError(f"{out} is not empty and is not a {what} build")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        # mkdtemp and safetensors make owner-only files; Ray workers may run as another user.
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (tmp / marker).write_text(json.dumps(params))  # last: its presence means complete
        try:
            os.rename(tmp, out)  # atomic; replaces an empty dir, fails if another won
        except OSError:
            if existing():
                return out
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
