"""build_once publishes a build whole, once, and locked builders (Gemma) never build twice."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from deployments.models.build_once import build_once

MARKER = ".done"


def _build(out: Path, calls: list[int], lock: bool = False, seed: int = 0) -> Path:
    def write(tmp: Path) -> None:
        calls.append(seed)
        time.sleep(0.2)  # long enough for the other threads to find no build yet
        (tmp / "weights").write_text(str(seed))

    return build_once(
        out, marker=MARKER, params={"seed": seed}, what="test model", write=write, lock=lock
    )


def test_built_once_then_reused(tmp_path):
    calls: list[int] = []
    out = _build(tmp_path / "m", calls)
    assert _build(tmp_path / "m", calls) == out == (tmp_path / "m").resolve()
    assert calls == [0] and json.loads((out / MARKER).read_text()) == {"seed": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left


def test_other_parameters_or_foreign_data_are_refused(tmp_path):
    _build(tmp_path / "m", [])
    with pytest.raises(ValueError, match="built with"):
        _build(tmp_path / "m", [], seed=1)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        _build(tmp_path / "foreign", [])


def test_a_marker_may_record_more_than_the_parameters(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MARKER).write_text(json.dumps({"seed": 0, "seconds": 61.2}))
    calls: list[int] = []
    _build(tmp_path / "m", calls)
    assert calls == []


def test_locked_builders_wait_for_the_first_and_clear_a_killed_ones_leftovers(tmp_path):
    (tmp_path / ".m.killed").mkdir()  # what a builder killed mid-write leaves
    calls: list[int] = []
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(_build(tmp_path / "m", calls, lock=True)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [0] and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]
