#!/usr/bin/env bash
# Starts a local one-node Ray bound to loopback and serves serve_config.yaml (or the
# config given as $1) on http://127.0.0.1:8000 until Ctrl-C, then stops that Ray node
# (only the one it started: never `ray stop`, which would end every Ray on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-serve_config.yaml}"
PORT="${RAY_PORT:-6390}"
# Loopback-only single-node cluster: no token needed (Ray 2.60 enables token auth by default).
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1 RAY_AUTH_MODE=disabled
set -m  # the head runs in its own process group, so one signal stops all it started
.venv/bin/ray start --head --block --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats \
    >/tmp/openai-serve-ray-head.log 2>&1 &
HEAD_PID=$!
set +m
trap 'kill -TERM -- -$HEAD_PID 2>/dev/null; sleep 5; kill -KILL -- -$HEAD_PID 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    .venv/bin/ray status --address="127.0.0.1:$PORT" >/dev/null 2>&1 && break
    kill -0 "$HEAD_PID" 2>/dev/null || { cat /tmp/openai-serve-ray-head.log; exit 1; }
    sleep 1
done
echo "Serving $CONFIG on http://127.0.0.1:8000/v1/openai (first start prepares the model: minutes)"
.venv/bin/serve run --address="127.0.0.1:$PORT" "$CONFIG"
