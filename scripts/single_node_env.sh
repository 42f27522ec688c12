# Sourced by scripts/serve.sh: exports each KEY=VALUE of scripts/single_node.env (Ray's
# and Serve's background periods for the one-node default, docs/performance.md "Idle CPU") unless the
# environment already has that key. bench/servers.py reads the same file.
while IFS='=' read -r key value; do
    case "$key" in '' | '#'*) continue ;; esac
    if [ -z "${!key+set}" ]; then export "$key=$value"; fi
done <"$(dirname "${BASH_SOURCE[0]}")/single_node.env"
unset key value
