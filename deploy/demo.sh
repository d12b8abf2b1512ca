#!/usr/bin/env bash
# A three-node reachmap fleet on this machine: network namespaces joined by a
# bridge, the collector in the hub, an agent on every node. Usage:
#   sudo deploy/demo.sh
# Interactive: leaves the fleet running until Enter or Ctrl-C. Otherwise (no
# TTY): shows the nodes and tears everything down. Nothing survives the script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
# shellcheck source=deploy/common.sh
source deploy/common.sh

readonly nodes=3
readonly hub_addr=198.18.0.1
readonly collector_url="https://$hub_addr:7440"
readonly prefix="rmdemo-$$"
readonly hub="$prefix-hub"
readonly bin="$repo/target/debug"

if [[ $(id -u) -ne 0 ]]; then
    echo "the demo creates network namespaces: run it as root (sudo $0)" >&2
    exit 1
fi

created=()
pids=()
logs=""
torn_down=0

teardown() {
    local rc=$?
    ((torn_down)) && return
    torn_down=1
    local pid ns i
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in "${created[@]}"; do remove_netns "$ns"; done
    if [[ -n "$logs" ]]; then
        if ((rc == 0)); then rm -rf "$logs"; else echo "logs kept in $logs" >&2; fi
    fi
    echo "demo fleet torn down"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Kills whatever still runs inside a namespace, then deletes it.
remove_netns() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
}

# Namespaces of an earlier demo whose script is gone (rmdemo-<pid>-...).
sweep_leftovers() {
    local ns pid
    for ns in $(ip netns list | awk '{print $1}'); do
        [[ $ns =~ ^rmdemo-([0-9]+)- ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -d /proc/$pid ]] && continue
        echo "removing leftover namespace $ns"
        remove_netns "$ns"
    done
}

add_netns() {
    ip netns add "$1"
    created+=("$1")
}

build_fleet() {
    add_netns "$hub"
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge
    ip -n "$hub" addr add "$hub_addr/24" dev br0
    ip -n "$hub" link set br0 up
    local i ns
    for ((i = 0; i < nodes; i++)); do
        ns="$prefix-n$i"
        add_netns "$ns"
        # Created from inside the hub: no link name appears in the root namespace.
        ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "v$i" master br0
        ip -n "$hub" link set "v$i" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "198.18.0.$((11 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "$hub_addr"
    done
}

# start NAMESPACE LOGNAME COMMAND...: runs COMMAND in the namespace, in the
# background, output to $logs/LOGNAME.log.
start() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$logs/$log.log" 2>&1 &
    pids+=($!)
}

show_logs() {
    local f
    for f in "$logs"/*.log; do
        echo "----- tail of $f -----" >&2
        tail -n 30 "$f" >&2
    done
}

cli() {
    ip netns exec "$hub" "$bin/reachmap" --collector "$collector_url" \
        --credentials "$logs/operator.pem" "$@"
}

# collector_cmd ARGS...: the collector's offline subcommands on its data dir.
collector_cmd() {
    "$bin/reachmap-collector" --data-dir "$logs/collector-data" \
        --listen "$hub_addr:7440" --http "$hub_addr:7441" "$@"
}

echo "==== packages and build"
ensure_packages
ensure_cargo
cargo build --bins

echo "==== fleet: $hub and $nodes nodes"
sweep_leftovers
logs=$(mktemp -d /tmp/rmdemo.XXXXXX)
build_fleet
mkdir -p "$logs/collector-data"
echo "==== trust: the collector's CA, a bootstrap token, an operator's credentials"
pin=$(collector_cmd ca init)
token=$(collector_cmd token create --uses "$nodes" --ttl 10m --description demo)
collector_cmd issue-client demo-operator --role operator -o "$logs/operator.pem"
viewer_token=$(collector_cmd token create --role viewer --ttl 1d --description demo-viewer)
echo "CA pin $pin; agents enrol with a one-use-per-node token"
start "$hub" collector "$bin/reachmap-collector" --listen "$hub_addr:7440" \
    --http "$hub_addr:7441" --data-dir "$logs/collector-data" --probe-interval 2s
for ((i = 0; i < nodes; i++)); do
    start "$prefix-n$i" "agent-node-$i" "$bin/reachmap-agent" --collector "$collector_url" \
        --node "node-$i" --heartbeat-interval 1s --reconnect-max 1s \
        --state-dir "$logs/agent-state-node-$i" --enroll-token "$token" --ca-pin "$pin"
done

echo "==== waiting for $nodes connected nodes (up to 30 s)"
connected=0
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    json=$(cli nodes --format json 2>/dev/null || true)
    connected=$(tr -d '[:space:]' <<<"$json" | grep -o '"connected":true' | wc -l || true)
    ((connected >= nodes)) && break
    sleep 0.5
done
if ((connected < nodes)); then
    echo "error: only $connected of $nodes nodes connected after 30 s" >&2
    echo "last answer of reachmap nodes: ${json:-<none>}" >&2
    show_logs
    exit 1
fi

echo "==== reachmap nodes"
cli nodes

echo "==== waiting for the probe mesh (up to 20 s)"
deadline=$((SECONDS + 20))
while ((SECONDS < deadline)); do
    json=$(cli matrix --format json 2>/dev/null || true)
    ok=$(tr -d '[:space:]' <<<"$json" | grep -o '"state":"ok"' | wc -l || true)
    ((ok >= nodes * (nodes - 1) * 2)) && break
    sleep 0.5
done
echo "==== reachmap matrix"
cli matrix

if [[ -t 1 ]]; then
    echo
    echo "The fleet is running. Query it with:"
    local_cli="sudo ip netns exec $hub $bin/reachmap --collector $collector_url --credentials $logs/operator.pem"
    echo "  $local_cli nodes"
    echo "  $local_cli matrix"
    echo "  $local_cli test-port node-0 node-1:9000"
    echo "  sudo ip netns exec $hub curl -s --cacert $logs/collector-data/tls/ca.crt -H 'Authorization: Bearer $viewer_token' https://$hub_addr:7441/metrics"
    echo "Break something and watch the matrix, then ask why, e.g. drop node-2's probe port:"
    echo "  sudo ip netns exec $prefix-n2 nft 'add table inet demo; add chain inet demo in { type filter hook input priority 0; }; add rule inet demo in tcp dport 7442 drop'"
    echo "  $local_cli why node-0 node-2"
    echo "Logs: $logs"
    echo "Press Enter or Ctrl-C to tear it down."
    trap 'exit 0' INT
    read -r _ || true
fi
