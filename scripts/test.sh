#!/usr/bin/env bash
# Runs the test suite: unit tests, then end-to-end tests on real Ray + Serve + vLLM
# (CPU) with tiny models the suite builds itself. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1
exec .venv/bin/python -m pytest "$@"
