#!/usr/bin/env bash
# Starts a local one-node Ray bound to loopback and serves serve_config.yaml (or the
# config given as $1) on http://127.0.0.1:8000 until Ctrl-C, then stops that Ray node
# (only the one it started: never `ray stop`, which would end every Ray on the machine).
# Once the API answers it prints the playground's and the API's URLs and which models
# are still starting (scripts/announce.py).
#
#   RAY_PORT                    GCS port (default 6390)
#   OPENAI_SERVE_RAY_TEMP_DIR   the head's Ray temp dir: logs, sockets, its address file
#                               (default /tmp/openai-serve-ray-$UID)
#   OPENAI_SERVE_DASHBOARD      0: start the head without Ray's dashboard (default 1)
#   RAY_SERVE_THROUGHPUT_OPTIMIZED  0: Serve's classic data plane instead of its
#                               throughput mode (default 1 here; docs/performance.md)
#   OPENAI_SERVE_HAPROXY        1: Ray Serve's HAProxy in front of the ingress instead of
#                               its Python proxy, closed by scripts/haproxy_guard.py
#                               (default 0; docs/performance.md "HAProxy in front")
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-serve_config.yaml}"
PORT="${RAY_PORT:-6390}"
# A temp dir of its own: `ray start` writes the head's address into
# $TEMP_DIR/ray_current_cluster instead of Ray's default /tmp/ray/ray_current_cluster,
# which a later plain `ray.init()` / `serve run` would follow to this head long after it
# stopped (retrying a dead GCS for minutes).
TEMP_DIR="${OPENAI_SERVE_RAY_TEMP_DIR:-/tmp/openai-serve-ray-$(id -u)}"
mkdir -p "$TEMP_DIR"
# Versions before this one wrote that default file; drop it if it names our head.
DEFAULT_ADDRESS_FILE="${RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray/ray_current_cluster"
if [ "$(cat "$DEFAULT_ADDRESS_FILE" 2>/dev/null)" = "127.0.0.1:$PORT" ]; then
    rm -f "$DEFAULT_ADDRESS_FILE"
fi
# Ray's token authentication stays on: scripts/ray_auth.sh makes the token once (owner
# only, ~/.cache/openai-serve/ray_auth_token) and exports it to the head and to
# `serve run` below. No Ray port accepts a peer without it.
source scripts/ray_auth.sh
# Loopback on top: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray keeps 127.0.0.1 as the
# node address (the head and its clients must agree on it; see scripts/ray_head.sh).
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 VLLM_HOST_IP=127.0.0.1 RAY_PORT="$PORT" \
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Ray Serve's throughput mode (docs/performance.md "Ray Serve's throughput mode"): gRPC
# between replicas and Serve's other latency-first defaults; +17-20 % tokens/s here, every
# e2e test passes in it (tests/conftest.py runs them so). Its ingress drains for 30 s
# before it stops, for load balancers this one-node default does not have: 1 s. Ray's own
# variable is the switch: RAY_SERVE_THROUGHPUT_OPTIMIZED=0 falls back to the classic mode.
export RAY_SERVE_THROUGHPUT_OPTIMIZED="${RAY_SERVE_THROUGHPUT_OPTIMIZED:-1}"
if [ "$RAY_SERVE_THROUGHPUT_OPTIMIZED" = "1" ]; then
    export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-1}"
fi
# HAProxy in front (docs/performance.md "HAProxy in front"): Ray Serve runs HAProxy through
# scripts/haproxy_guard.py, which binds its stats and Prometheus listeners on the API's
# address (Ray's config has them on every interface), makes its admin socket owner-only
# and its "no replica" answers OpenAI-shaped. 64 KB buffer: header sets up to the
# ingress's own limit (32 KB) reach the ingress and get its 431. Same as bench/servers.py
# HAPROXY_ENV. Its config and sockets go to a folder of this user's alone (Ray's
# /tmp/haproxy-serve would be whoever's made it first; the guard checks). Short: a socket
# path there holds a 56-character node id.
if [ "${OPENAI_SERVE_HAPROXY:-0}" = "1" ]; then
    HAPROXY_DIR="/tmp/oss-haproxy-$(id -u)"
    mkdir -p -m 700 "$HAPROXY_DIR"
    if [ ! -O "$HAPROXY_DIR" ] || [ "$(stat -c %a "$HAPROXY_DIR")" != 700 ]; then
        echo "serve.sh: $HAPROXY_DIR must be this user's alone (mode 700)" >&2
        exit 1
    fi
    export RAY_SERVE_ENABLE_HA_PROXY=1 \
        RAY_SERVE_HAPROXY_BINARY_PATH="$PWD/scripts/haproxy_guard.py" \
        RAY_SERVE_HAPROXY_TUNE_BUFSIZE="${RAY_SERVE_HAPROXY_TUNE_BUFSIZE:-65536}" \
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC="$HAPROXY_DIR/haproxy.cfg" \
        RAY_SERVE_HAPROXY_SOCKET_PATH="$HAPROXY_DIR/admin.sock" \
        RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH="$HAPROXY_DIR/metrics.sock" \
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE="$HAPROXY_DIR" \
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE="$HAPROXY_DIR/server-state"
fi
# Idle CPU (docs/performance.md "Idle CPU"): Ray's and Serve's background periods for this one-node
# default, from scripts/single_node.env (the benchmark reads the same file). Exported
# here, so the head, every worker and `serve run` get them; a value already in the
# environment wins.
source scripts/single_node_env.sh
# The dashboard (127.0.0.1:8265: web UI, `serve deploy`/`serve status`, jobs, `ray list`)
# stays on; OPENAI_SERVE_DASHBOARD=0 starts the head without it (Ray then runs only a
# minimal dashboard process; the metrics agent stays) and saves about 2 % of a core.
DASHBOARD_ARGS=()
if [ "${OPENAI_SERVE_DASHBOARD:-1}" = "0" ]; then DASHBOARD_ARGS=(--include-dashboard=false); fi
set -m  # the head runs in its own process group, so one signal stops all it started
scripts/ray_head.sh --temp-dir="$TEMP_DIR" "${DASHBOARD_ARGS[@]}" >"$TEMP_DIR/head.log" 2>&1 &
HEAD_PID=$!
set +m
ANNOUNCE_PID="" SERVE_PID=""
stop() {
    if [ -n "$ANNOUNCE_PID" ]; then kill "$ANNOUNCE_PID" 2>/dev/null || true; fi
    if [ -n "$SERVE_PID" ]; then kill -TERM -- -"$SERVE_PID" 2>/dev/null || true; fi
    # SIGTERM to `ray start --block` alone: it drains the node through the GCS, then
    # stops what it started (~3 s). SIGTERM to the whole group takes the GCS down first
    # and leaves that drain waiting 30 s for it.
    kill -TERM "$HEAD_PID" 2>/dev/null || return 0
    for _ in $(seq 20); do  # up to 10 s for Ray's processes to go, then no more waiting
        kill -0 -- -"$HEAD_PID" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL -- -"$HEAD_PID" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 120); do
    .venv/bin/ray status --address="127.0.0.1:$PORT" >/dev/null 2>&1 && break
    kill -0 "$HEAD_PID" 2>/dev/null || { cat "$TEMP_DIR/head.log"; exit 1; }
    sleep 1
done
echo "Serving $CONFIG (first start prepares the models: minutes; Ray logs in $TEMP_DIR)"
.venv/bin/python scripts/announce.py "$CONFIG" &
ANNOUNCE_PID=$!
# `serve run` in a job of its own (set -m: it keeps its SIGINT, which a plain background
# command would ignore): Ctrl-C, TERM or HUP of this script reach it as a Ctrl-C, so it
# removes the applications before the head stops, and it never outlives the script.
# `env --default-signal=INT`: this script started with `&` from another script inherits
# SIGINT ignored, which no shell can undo for itself; `serve run` must still take it.
set -m
env --default-signal=INT .venv/bin/serve run --address="127.0.0.1:$PORT" "$CONFIG" &
SERVE_PID=$!
set +m
trap 'kill -INT "$SERVE_PID" 2>/dev/null || true' INT TERM HUP
while kill -0 "$SERVE_PID" 2>/dev/null; do wait "$SERVE_PID" || true; done
