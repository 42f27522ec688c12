"""tests/cluster runs in its own pytest process (scripts/test.sh): it starts a
multi-node Ray with cluster/local_cluster.sh, which must not meet the single-node
ray.init of tests/e2e in one process. Measurements go to the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

REPORT: list[str] = []
_HERE = Path(__file__).parent
# Pure tests here (files only, no Ray): they run whatever else is collected.
_PURE = {"test_manifests.py"}


def pytest_collection_modifyitems(config, items):
    """Collected with tests that start their own Ray in this process (tests/e2e, e.g.
    `pytest tests`): skip these instead of colliding."""
    ours = [
        i
        for i in items
        if _HERE in Path(str(i.path)).parents and Path(str(i.path)).name not in _PURE
    ]
    clash = any(
        i.get_closest_marker("e2e") or "ray_serve" in getattr(i, "fixturenames", ())
        for i in items
        if i not in ours
    )
    if ours and clash:
        skip = pytest.mark.skip(
            reason="run tests/cluster in its own pytest process "
            "(scripts/test.sh does: pytest tests/cluster)"
        )
        for item in ours:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("tests/cluster: measurements")
        for line in REPORT:
            terminalreporter.write_line(line)
