#!/usr/bin/env bash
# Runs a one-node Ray head in the foreground (`ray start --block`), the way
# scripts/serve.sh does: token authentication on (scripts/ray_auth.sh), node and
# dashboard on loopback. Extra arguments go to `ray start`.
#
#   RAY_PORT       GCS port (default 6390)
#   RAY_NUM_CPUS   logical CPUs to offer (default: the CPUs Ray detects; more than the
#                  machine has would oversubscribe its cores)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/ray_auth.sh
source "$ROOT/scripts/ray_auth.sh"
# With this off, `--node-ip-address=127.0.0.1` is kept (Ray otherwise swaps it for the
# machine's outward address) and every Ray socket of this one-node cluster binds to
# loopback: GCS, raylet, agents, client server, metrics (checked by
# tests/cluster/test_ray_auth.py). Clients of this head (`ray status`, `serve run`)
# need the same setting, or they look for it at the outward address.
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec "$ROOT/.venv/bin/ray" start --head --block --node-ip-address=127.0.0.1 \
    --port="${RAY_PORT:-6390}" --dashboard-host=127.0.0.1 \
    ${RAY_NUM_CPUS:+--num-cpus="$RAY_NUM_CPUS"} --disable-usage-stats "$@"
