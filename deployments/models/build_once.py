"""Build a model directory once, safely, whoever else is building it at the same time.

Several replicas (or test processes) may start on one machine together and each find
the directory missing. Each writes into its own temporary sibling directory and renames
it into place: the rename is atomic, and a loser finds the winner's complete build. A
marker file, written last, records the build's parameters, so its presence means
"complete" and a build with other parameters is refused rather than reused.

A build that costs minutes and gigabytes (Gemma's conversion) also takes a lock
beside the directory (`lock=True`): the other builders wait for the first one and then
find its build, instead of each paying for their own copy.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_once(
    out_dir: str | Path,
    *,
    marker: str,
    params: dict[str, Any],
    what: str,
    write: Callable[[Path], None],
    lock: bool = False,
) -> Path:
    """Returns the absolute path of the build at `out_dir`, running `write(tmp_dir)` first
    if there is none.

    Args:
        out_dir: where the build lives.
        marker: the marker file's name inside it.
        params: what the build depends on; recorded in the marker, and compared with
            an existing marker's (which may record more keys).
        what: the build's name, for error messages.
        write: fills a fresh directory with the build.
        lock: serialise builders with an flock beside `out_dir` (for costly builds).

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
        if not isinstance(found, dict) or any(found.get(k) != v for k, v in params.items()):
            raise ValueError(
                f"{out} holds a {what} built with {found}, not {params}; pass another directory"
            )
        return True

    if existing():  # the fast path: no lock, no heavy imports
        return out
    if not lock:
        return _build(out, marker, params, what, write, existing)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The lock file is never deleted: deleting it would let a late process lock a
    # different inode while an early one still holds the old.
    with open(out.parent / f".{out.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if existing():  # built while we waited
            return out
        # No other builder runs while we hold the lock: temporary directories left
        # now are from a killed one.
        for stale in out.parent.glob(f".{out.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        return _build(out, marker, params, what, write, existing)


def _build(
    out: Path,
    marker: str,
    params: dict[str, Any],
    what: str,
    write: Callable[[Path], None],
    existing: Callable[[], bool],
) -> Path:
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
