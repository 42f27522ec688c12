#!/usr/bin/env bash
# Starts a local one-node Ray bound to loopback and serves serve_config.yaml (or the
# config given as $1) on http://127.0.0.1:8000 until Ctrl-C, then stops Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-serve_config.yaml}"
PORT="${RAY_PORT:-6390}"
# Loopback-only single-node cluster: no token needed (Ray 2.60 enables token auth by default).
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1 RAY_AUTH_MODE=disabled
.venv/bin/ray start --head --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats >/dev/null
trap '.venv/bin/ray stop --force >/dev/null 2>&1 || true' EXIT
echo "Serving $CONFIG on http://127.0.0.1:8000/v1/openai (first start prepares the model: minutes)"
.venv/bin/serve run --address="127.0.0.1:$PORT" "$CONFIG"
