#!/usr/bin/env bash
# Runs the test suite: unit tests, then end-to-end tests on real Ray + Serve + vLLM
# (CPU) with tiny models the suite builds itself. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need beyond serving, installed first when missing (scripts/install.sh
# installs only what serving needs): `scripts/install.sh --test` (on the .venv's own
# CPU/GPU path) when there is no .venv or any pin of the `test` extra in pyproject.toml is
# not met; else only the tools outside Python (scripts/install_test_tools.sh, quick when
# all is there).
if [ -x .venv/bin/python ] && .venv/bin/python - <<'PY'; then
import importlib.metadata as metadata
import sys
import tomllib

from packaging.requirements import Requirement

with open("pyproject.toml", "rb") as f:
    pins = tomllib.load(f)["project"]["optional-dependencies"]["test"]
for pin in map(Requirement, pins):
    try:
        version = metadata.version(pin.name)
    except metadata.PackageNotFoundError:
        sys.exit(f"test.sh: {pin.name} is missing: installing the test extra")
    if not pin.specifier.contains(version, prereleases=True):
        sys.exit(f"test.sh: {pin.name} {version} does not meet {pin}: installing the test extra")
PY
    scripts/install_test_tools.sh
else
    scripts/install.sh --test
fi
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1
# With arguments: one pytest run of what they name.
if [ "$#" -gt 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
# --durations: where the suite's time goes, in every CI log (.ci/run has a budget).
.venv/bin/python -m pytest --ignore=tests/cluster --durations=20
# Then the multi-node tests (a head and two worker nodes on this machine, started by
# cluster/local_cluster.sh): their own pytest process, apart from tests/e2e's ray.init.
.venv/bin/python -m pytest tests/cluster --durations=10
