#!/usr/bin/env bash
# Runs the test suite: unit tests, then end-to-end tests on real Ray + Serve + vLLM
# (CPU) with tiny models the suite builds itself. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1
# With arguments: one pytest run of what they name.
if [ "$#" -gt 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
# --durations: where the suite's time goes, in every CI log (.ci/run has a budget).
.venv/bin/python -m pytest --ignore=tests/cluster --durations=20
# Then the multi-node tests (a head and two worker nodes on this machine, started by
# cluster/local_cluster.sh): their own pytest process, apart from tests/e2e's ray.init.
.venv/bin/python -m pytest tests/cluster --durations=10
