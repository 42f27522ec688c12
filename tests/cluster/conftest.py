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
# pytest-timeout's bound for each test here that starts a cluster or `serve run`, from its
# setup to its teardown (the pure ones keep pyproject.toml's 60 s): the test that first
# asks for a module fixture pays its start (test_multinode's cluster: `up` 300 s and
# `deploy` 900 s at most), the module's last test its teardown (`down`, 300 s), and the
# tests' own waits are long too (START_BOUND_S = 1200 in test_serve_run.py; a worker node
# lost and back, up to ~20 minutes of bounded waits in test_multinode.py). 1800 s, the
# whole CI budget (.ci/run): far past what any of them takes when it works (test_serve_run
# ~4.5 minutes), so it ends only a hang, and the waits above, which fail with their own
# messages, mostly come first. Fixtures stay inside the bound (not timeout_func_only), so
# a cluster that never comes up fails too. A module or test with its own
# `pytest.mark.timeout` keeps it.
CLUSTER_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config, items):
    """Gives the tests that start clusters their bound (CLUSTER_TIMEOUT_S); collected with
    tests that start their own Ray in this process (tests/e2e, e.g. `pytest tests`), skips
    them instead of colliding."""
    ours = [
        i
        for i in items
        if _HERE in Path(str(i.path)).parents and Path(str(i.path)).name not in _PURE
    ]
    for item in ours:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(CLUSTER_TIMEOUT_S))
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
