#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine: a head plus N worker nodes, each its
# own `ray start` (its own raylet, object store and agents) joined to the head's GCS,
# each with a custom resource naming it, so placement by resources is visible.
#
#   cluster/local_cluster.sh up [N]            head + N workers (default 2)
#   cluster/local_cluster.sh deploy [CONFIG]   serve deploy CONFIG (default
#                                              cluster/local_config.yaml), wait for RUNNING
#   cluster/local_cluster.sh status            nodes (with their labels) and `serve status`
#   cluster/local_cluster.sh stop-node I       kill worker I at once (a machine lost)
#   cluster/local_cluster.sh start-node I      (re)start worker I
#   cluster/local_cluster.sh down              stop every node this script started
#   cluster/local_cluster.sh env               print the addresses (for `source <(...)`)
#
# Node labels (custom resources): head {"node_head": 1}; worker I
# {"node_worker_I": 1, "model_slot": 1}. A deployment asking for
# `resources: {model_slot: 1}` gets at most one replica per worker.
#
# Every node has a loopback address of its own. Each node runs `ray start --block` in its own process
# group and is stopped by killing that group, never with `ray stop` (which would
# also stop every other Ray on this machine, e.g. a concurrent test run).
#
# Environment (all optional):
#   CLUSTER_DIR     state: pids, logs, Ray's temp dir   (default /tmp/openai-serve-cluster)
#   RAY_PORT        head GCS port                       (default 6391)
#   DASHBOARD_PORT  head dashboard port, used by serve  (default 8266)
#   NODE_CPUS       logical CPUs per node               (default 2)
#   DEPLOY_TIMEOUT  seconds `deploy` waits for RUNNING  (default 600)
# Anything else in the environment (e.g. OPENAI_SERVE_CACHE) reaches every node and
# so every replica. Worker I's vLLM engines bind CPU core (I-1) mod nproc
# (VLLM_CPU_OMP_THREADS_BIND set per node), so engines on two nodes don't share one.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/openai-serve-cluster}"
RAY_PORT="${RAY_PORT:-6391}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8266}"
NODE_CPUS="${NODE_CPUS:-2}"
DEPLOY_TIMEOUT="${DEPLOY_TIMEOUT:-600}"
# Each node has its own loopback address (all of 127.0.0.0/8 is this machine), so
# node IPs tell nodes apart in `serve status` and nothing leaves loopback. (Ray
# replaces 127.0.0.1 itself by the machine's outward address; other 127.x it keeps.)
HEAD_IP=127.0.0.10
worker_ip() { echo "127.0.0.$(( 10 + $1 ))"; }
HEAD="$HEAD_IP:$RAY_PORT"
DASHBOARD="http://127.0.0.1:$DASHBOARD_PORT"
# Token authentication on for every node and client this script starts (the token is
# made once, owner-only: scripts/ray_auth.sh); loopback addresses on top.
# shellcheck source=scripts/ray_auth.sh
source "$ROOT/scripts/ray_auth.sh"
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
    VLLM_HOST_IP=127.0.0.1 TOKENIZERS_PARALLELISM=false
# Ray's temp dir holds unix sockets: its path must stay short.
TEMP_DIR="$CLUSTER_DIR/ray"

die() { echo "local_cluster: $*" >&2; exit 1; }

# Is process $1 running? (A zombie is not: nodes outlive the shell that started them,
# and their new parent may be slow to reap them.)
running() {
    local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ "$st" != Z* ]]
}

free_port() {
    "$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts one node: `ray start --block` in its own session (process group), so the
# node's raylet, agents and reaper can be killed together. Args: name, ray start args.
start_node() {
    local name="$1"; shift
    local log="$CLUSTER_DIR/$name.log"
    if [ -f "$CLUSTER_DIR/$name.pid" ] && running "$(cat "$CLUSTER_DIR/$name.pid")"; then
        die "$name is already running (pid $(cat "$CLUSTER_DIR/$name.pid"))"
    fi
    # Every node on this one machine needs its own agent and metrics ports. Two are
    # kept: metrics (/metrics: the node's Serve replica counters) and the agent's
    # HTTP port (/api/local_raylet_healthz, the node health the KubeRay probes use).
    local metrics_port agent_port; metrics_port=$(free_port); agent_port=$(free_port)
    setsid "$VENV_BIN/ray" start --block \
        --num-cpus="$NODE_CPUS" --object-store-memory=200000000 \
        --dashboard-agent-listen-port="$agent_port" --dashboard-agent-grpc-port="$(free_port)" \
        --runtime-env-agent-port="$(free_port)" --metrics-export-port="$metrics_port" \
        --disable-usage-stats "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/$name.pid"
    echo "$metrics_port" >"$CLUSTER_DIR/$name.metrics_port"
    echo "$agent_port" >"$CLUSTER_DIR/$name.agent_port"   # /api/local_raylet_healthz
}

# Alive nodes carrying custom resource $1 (GCS view, through the dashboard's state
# API), or all alive nodes for "". Plain urllib: polled every second, it must be light.
# The dashboard wants Ray's token (Authorization: Bearer), like every Ray client here.
count_alive() {
    "$VENV_BIN/python" - "$DASHBOARD" "$1" <<'EOF' 2>/dev/null || echo -1
import json, os, sys, urllib.request
token = open(os.environ["RAY_AUTH_TOKEN_PATH"]).read().strip()
url = f"{sys.argv[1]}/api/v0/nodes?limit=1000&detail=1"
req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
with urllib.request.urlopen(req, timeout=10) as r:
    nodes = json.load(r)["data"]["result"]["result"]
print(sum(1 for n in nodes if n["state"] == "ALIVE"
          and (not sys.argv[2] or sys.argv[2] in n.get("resources_total", {}))))
EOF
}

# Waits until count_alive $1 is $2 (at most $3 seconds, default 120).
wait_alive() {
    local label="$1" want="$2" limit="${3:-120}" deadline have
    deadline=$(( $(date +%s) + limit ))
    while :; do
        have=$(count_alive "$label")
        [ "$have" = "$want" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || die "${label:-nodes}: $have alive, not $want, after $limit s (logs: $CLUSTER_DIR/*.log)"
        sleep 1
    done
}

alive_nodes() {
    local n=0 f
    for f in "$CLUSTER_DIR"/*.pid; do
        [ -e "$f" ] || continue
        if running "$(cat "$f")"; then n=$((n + 1)); fi
    done
    echo "$n"
}

# Starts node $1 (start_node args follow) and waits until a node with label $2 is
# alive. `ray start` gives a raylet 30 s to register, which a loaded machine can
# miss: then it exits, and the node is started again (3 tries).
start_checked() {
    local name="$1" label="$2"; shift 2
    local try deadline
    for try in 1 2 3; do
        start_node "$name" "$@"
        deadline=$(( $(date +%s) + 150 ))
        while [ "$(date +%s)" -lt "$deadline" ]; do
            [ "$(count_alive "$label")" = 1 ] && return 0
            running "$(cat "$CLUSTER_DIR/$name.pid")" || break
            sleep 1
        done
        echo "local_cluster: $name did not come up (try $try); log: $CLUSTER_DIR/$name.log" >&2
        cp "$CLUSTER_DIR/$name.log" "$CLUSTER_DIR/$name.try$try.log" 2>/dev/null || true
        kill_node "$name" KILL
    done
    die "$name did not start after 3 tries (logs: $CLUSTER_DIR/$name.try*.log)"
}

start_worker() {
    local i="$1"
    local cores; cores=$(nproc)
    VLLM_CPU_OMP_THREADS_BIND="$(( (i - 1) % cores ))" \
        start_checked "worker-$i" "node_worker_$i" \
        --address="$HEAD" --node-ip-address="$(worker_ip "$i")" --temp-dir="$TEMP_DIR" \
        --resources="{\"node_worker_$i\": 1, \"model_slot\": 1}"
}

# Kills one node's process group: ray start, raylet, agents (its worker processes
# exit when their raylet goes). Args: name, signal.
kill_node() {
    local name="$1" sig="${2:-KILL}" pidfile="$CLUSTER_DIR/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid; pid=$(cat "$pidfile")
    kill "-$sig" -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do running "$pid" || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile" "$CLUSTER_DIR/$name.metrics_port" "$CLUSTER_DIR/$name.agent_port"
}

cmd="${1:-}"; shift || true
case "$cmd" in
up)
    workers="${1:-2}"
    mkdir -p "$CLUSTER_DIR"
    [ "$(alive_nodes)" = 0 ] || die "a cluster is already up in $CLUSTER_DIR (run: $0 down)"
    start_checked head node_head --head --node-ip-address="$HEAD_IP" --port="$RAY_PORT" \
        --temp-dir="$TEMP_DIR" --include-dashboard=true --dashboard-host=127.0.0.1 \
        --dashboard-port="$DASHBOARD_PORT" --resources='{"node_head": 1}'
    # One at a time: node starts compete for the CPUs.
    for i in $(seq 1 "$workers"); do start_worker "$i"; done
    wait_alive "" $(( workers + 1 ))
    echo "local cluster up: head + $workers workers; GCS $HEAD, dashboard $DASHBOARD"
    ;;
deploy)
    config="${1:-$ROOT/cluster/local_config.yaml}"
    "$VENV_BIN/serve" deploy --address="$DASHBOARD" "$config"
    "$VENV_BIN/python" - "$DASHBOARD" "$DEPLOY_TIMEOUT" "$config" <<'EOF'
import json, os, sys, time, urllib.request
import yaml
dashboard, timeout, config = sys.argv[1], float(sys.argv[2]), sys.argv[3]
token = open(os.environ["RAY_AUTH_TOKEN_PATH"]).read().strip()
auth = {"Authorization": f"Bearer {token}"}  # the dashboard wants Ray's token
want = {a["name"] for a in yaml.safe_load(open(config))["applications"]}
deadline, statuses = time.monotonic() + timeout, {}
while time.monotonic() < deadline:
    req = urllib.request.Request(f"{dashboard}/api/serve/applications/", headers=auth)
    with urllib.request.urlopen(req, timeout=10) as r:
        apps = json.load(r).get("applications") or {}
    statuses = {name: apps.get(name, {}).get("status", "NOT_STARTED") for name in want}
    if any(s == "DEPLOY_FAILED" for s in statuses.values()):
        sys.exit(f"deploy failed: {statuses}; see `serve status -a {dashboard}`")
    if all(s == "RUNNING" for s in statuses.values()):
        print(f"all {len(want)} applications RUNNING")
        sys.exit(0)
    time.sleep(1)
sys.exit(f"not RUNNING after {timeout:g} s: {statuses}")
EOF
    ;;
status)
    "$VENV_BIN/python" - "$DASHBOARD" <<'EOF'
import sys
from ray.util.state import list_nodes
for n in list_nodes(address=sys.argv[1], limit=1000, raise_on_missing_output=False):
    labels = sorted(k for k in n.resources_total if k.startswith("node_"))
    print(f"{n.node_id[:12]}  {n.node_ip:12}  {n.state:5}  {'head' if n.is_head_node else 'worker'}  {','.join(labels)}")
EOF
    "$VENV_BIN/serve" status --address="$DASHBOARD"
    ;;
stop-node)
    [ -n "${1:-}" ] || die "usage: $0 stop-node I"
    kill_node "worker-$1" KILL
    echo "worker-$1 killed"
    ;;
start-node)
    [ -n "${1:-}" ] || die "usage: $0 start-node I"
    # A killed node stays ALIVE in the GCS until its health checks fail (seconds).
    wait_alive "node_worker_$1" 0 120
    start_worker "$1"
    echo "worker-$1 up"
    ;;
down)
    # SIGTERM to every node at once (each `ray start --block` then stops its own
    # processes), then kill_node waits for each and SIGKILLs whatever is left.
    for f in "$CLUSTER_DIR"/*.pid; do
        if [ -e "$f" ]; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
    done
    for f in "$CLUSTER_DIR"/worker-*.pid "$CLUSTER_DIR"/head.pid; do
        if [ -e "$f" ]; then kill_node "$(basename "$f" .pid)" TERM; fi
    done
    echo "local cluster down"
    ;;
env)
    # For `source <(cluster/local_cluster.sh env)`: then `ray status`, `serve status`.
    echo "export RAY_ADDRESS=$HEAD RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH RAY_DASHBOARD_ADDRESS=$DASHBOARD"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
