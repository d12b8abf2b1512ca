#!/usr/bin/env bash
# The reachmap demo: a five-node fleet on this machine, three faults made the
# way they happen in the field, and reachmap naming each one. Usage:
#   sudo deploy/demo.sh            # from a terminal: the fleet stays up until Enter
#   sudo deploy/demo.sh --check    # (or DEMO_CHECK=1) for the test command: no
#                                  # pause, exit 1 unless every fault's `why`
#                                  # names the expected cause
#
# The fleet: network namespaces joined by a bridge, the collector in the hub,
# an agent on every node, all on the secure path (the collector's own CA,
# per-node enrolment tokens, the agents pinning the CA, the CLI with a client
# certificate the collector issued). A veth from this host into the hub makes
# the collector's web page, API and gRPC port reachable from the host.
#
#   web-1   198.18.0.11  web server, 0.0.0.0:8080
#   web-2   198.18.0.12  web server, 0.0.0.0:8080; moves to 198.18.0.22
#   db-1    198.18.0.13  "postgres" on 127.0.0.1:5432 only            -> LOOPBACK_ONLY
#   cache-1 198.18.0.14  "redis" on 0.0.0.0:6379, then an nft drop    -> FIREWALL_INBOUND
#   queue-1 198.18.0.15  "amqp" on 0.0.0.0:5672, an allow-list of the
#                        fleet's addresses, web-2's old one included  -> STALE_ALLOWLIST_ADDRESS
#
# The services are tiny Python HTTP servers (python3 -m http.server), real
# listeners the agents see through sock_diag. Nothing survives the script:
# the EXIT trap stops every process and deletes every namespace and link.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
# shellcheck source=deploy/common.sh
source deploy/common.sh

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

check=0
[[ ${DEMO_CHECK:-0} == 1 ]] && check=1
for arg in "$@"; do
    case $arg in
        --check) check=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "unknown argument: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done

# Interactive: a terminal on stdin and stdout, and not checking.
interactive=0
[[ -t 0 && -t 1 ]] && ((!check)) && interactive=1

# ---------------------------------------------------------------- the fleet

readonly node_names=(web-1 web-2 db-1 cache-1 queue-1)
readonly node_roles=(web web db cache queue)
declare -A node_addr=()
for i in "${!node_names[@]}"; do node_addr[${node_names[$i]}]="198.18.0.$((11 + i))"; done
readonly web2_new_addr=198.18.0.22

readonly hub_addr=198.18.0.1
readonly prefix="rmdemo-$$"
readonly hub="$prefix-hub"
readonly bin="$repo/target/debug"
# The host's link into the hub: a /30 in 198.19.0.0/16 picked by this
# script's pid, so two demos on one machine do not collide.
readonly host_if="rmdemo-$$"
readonly link_base=$((($$ % 16384) * 4))
readonly hub_link_addr="198.19.$((link_base / 256)).$((link_base % 256 + 1))"
readonly host_link_addr="198.19.$((link_base / 256)).$((link_base % 256 + 2))"
readonly collector_url="https://$hub_link_addr:7440"
readonly web_url="https://$hub_link_addr:7441/"

# Timeouts, in seconds.
readonly connect_timeout=40
readonly mesh_timeout=40
readonly fault_timeout=60

# The staged faults: source, destination, the expected top cause and the node
# it is on, and whether a probe of the port exists (a loopback-only listener
# is not a probe target: peers cannot reach it, so nothing probes it).
readonly fault_src=(web-1 web-1 web-2)
readonly fault_dst=(db-1:5432 cache-1:6379 queue-1:5672)
readonly fault_code=(LOOPBACK_ONLY FIREWALL_INBOUND STALE_ALLOWLIST_ADDRESS)
readonly fault_node=(db-1 cache-1 queue-1)
readonly fault_probed=(0 1 1)

if [[ $(id -u) -ne 0 ]]; then
    echo "the demo creates network namespaces: run it as root (sudo $0)" >&2
    exit 1
fi

# ---------------------------------------------------------------- teardown

created=()
pids=()
logs=""
torn_down=0
started_at=$SECONDS

# shellcheck disable=SC2317 # run by the EXIT trap
teardown() {
    local rc=$?
    ((torn_down)) && return
    torn_down=1
    local ns
    stop_pids "${pids[@]}"
    wait 2>/dev/null || true
    # Deleting the hub also deletes the host's end of its veth.
    for ns in "${created[@]}"; do remove_netns "$ns"; done
    ip link del "$host_if" 2>/dev/null || true
    if [[ -n "$logs" ]]; then
        if ((rc == 0)); then rm -rf "$logs"; else echo "logs kept in $logs" >&2; fi
    fi
    echo "demo fleet torn down ($((SECONDS - started_at)) s in all)"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Namespaces and host links of an earlier demo whose script is gone
# (rmdemo-<pid>...).
sweep_leftovers() {
    local name pid
    sweep_stale_netns rmdemo
    for name in $(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}'); do
        [[ $name =~ ^rmdemo-([0-9]+)$ ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -d /proc/$pid ]] && continue
        echo "removing leftover link $name"
        ip link del "$name" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- helpers

say() {
    printf '\n==== %s\n' "$*"
}

fail() {
    echo "error: $*" >&2
    show_logs
    exit 1
}

show_logs() {
    [[ -n "$logs" ]] || return 0
    local f
    for f in "$logs"/*.log; do
        [[ -e $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 20 "$f" >&2
    done
}

# The namespace of a node.
ns_of() {
    echo "$prefix-$1"
}

# in_node NODE COMMAND...: runs COMMAND inside the node, in the foreground.
in_node() {
    local node=$1
    shift
    ip netns exec "$(ns_of "$node")" "$@"
}

# start NAMESPACE LOGNAME COMMAND...: runs COMMAND in the namespace, in the
# background, output to $logs/LOGNAME.log.
start() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$logs/$log.log" 2>&1 &
    pids+=($!)
}

# The reachmap CLI, from this host over the host link, as the demo operator.
cli() {
    "$bin/reachmap" --collector "$collector_url" --credentials "$logs/operator.pem" "$@"
}

# The collector's offline subcommands (CA, tokens, client certificates) on
# its data dir.
collector_cmd() {
    "$bin/reachmap-collector" --config "$logs/collector.toml" "$@"
}

# JSON on stdin through a Python expression over `d` (the parsed document):
# json_py 'len(d)' < file. Prints nothing for input that is not JSON.
json_py() {
    "$python" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
exec(sys.argv[1])
' "$1"
}

# Installs python3 (the demo's services) when it is missing.
ensure_python() {
    python=$(command -v python3 || true)
    if [[ -z $python ]]; then
        echo "python3 missing; installing it"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3
        python=$(command -v python3)
    fi
}

# ---------------------------------------------------------------- building it

build_fleet() {
    add_netns "$hub"
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge
    ip -n "$hub" addr add "$hub_addr/24" dev br0
    ip -n "$hub" link set br0 up
    local i name ns
    for i in "${!node_names[@]}"; do
        name=${node_names[$i]}
        ns=$(ns_of "$name")
        add_netns "$ns"
        # Created from inside the hub: no link name appears in the root namespace.
        ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "v$i" master br0
        ip -n "$hub" link set "v$i" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "${node_addr[$name]}/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "$hub_addr"
    done
    # The host's way in: a veth whose other end is in the hub. The hub does
    # not forward, so the host reaches the collector and nothing else.
    if ip -4 -o addr show | grep -q "inet $host_link_addr/"; then
        fail "$host_link_addr is already in use on this host"
    fi
    ip link add "$host_if" type veth peer name host0 netns "$hub"
    [[ -w /proc/sys/net/ipv6/conf/$host_if/disable_ipv6 ]] &&
        echo 1 >"/proc/sys/net/ipv6/conf/$host_if/disable_ipv6"
    ip addr add "$host_link_addr/30" dev "$host_if"
    ip link set "$host_if" up
    ip -n "$hub" addr add "$hub_link_addr/30" dev host0
    ip -n "$hub" link set host0 up
}

add_netns() {
    ip netns add "$1"
    created+=("$1")
}

# The collector's configuration: its addresses and names (for its server
# certificate), data directory and probing; no file from /etc is read.
write_configs() {
    cat >"$logs/collector.toml" <<EOF
# The demo collector (written by deploy/demo.sh).
listen = "0.0.0.0:7440"
http = "0.0.0.0:7441"
data_dir = "$logs/collector-data"
# Agents reach it on the bridge, this host over its veth.
server_names = ["$hub_addr", "$hub_link_addr"]
probe_interval = "2s"
probe_timeout = "1s"
# No [[services]]: a declared service is probed on every peer, and here each
# node runs its own. Every port a node listens on at a non-loopback address
# is probed anyway; db-1's loopback-only port is not, which is the fault.
EOF
    : >"$logs/agent.toml"
    mkdir -p "$logs/collector-data" "$logs/www"
    echo ok >"$logs/www/healthz"
}

# serve NODE LOGNAME ADDR PORT: a small HTTP server in the node.
serve() {
    start "$(ns_of "$1")" "$1-$2" "$python" -m http.server --bind "$3" "$4" \
        --directory "$logs/www"
}

# The services, and the state the fleet was in before anything broke.
start_services() {
    serve web-1 web 0.0.0.0 8080
    serve web-2 web 0.0.0.0 8080
    # Fault 1, there from the start: postgres's default is
    # listen_addresses = 'localhost'.
    serve db-1 postgres 127.0.0.1 5432
    serve cache-1 redis 0.0.0.0 6379
    serve queue-1 amqp 0.0.0.0 5672
    # queue-1 lets only the fleet's addresses in on 5672: the allow-list
    # fault 3 will make stale.
    in_node queue-1 nft -f - <<EOF
table inet filter {
    set fleet {
        type ipv4_addr
        elements = { ${node_addr[web-1]}, ${node_addr[web-2]}, ${node_addr[db-1]}, ${node_addr[cache-1]} }
    }
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 5672 ip saddr @fleet accept
        tcp dport 5672 drop
    }
}
EOF
}

# The trust layer as an operator sets it up: the CA and the operator's
# client certificate offline on the collector's host before its first start,
# then, through the running collector, a viewer token for the web page and
# one enrolment token per node, bound to its name.
start_trust_and_daemons() {
    local pin token i name deadline
    pin=$(collector_cmd ca init)
    collector_cmd issue-client demo-operator --role operator -o "$logs/operator.pem" >/dev/null
    echo "CA pin $pin; operator credentials in $logs/operator.pem"
    start "$hub" collector env REACHMAP_CONFIG="$logs/collector.toml" "$bin/reachmap-collector"
    deadline=$((SECONDS + 20))
    until cli nodes >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "the collector did not answer at $collector_url within 20 s"
        sleep 0.3
    done
    viewer_token=$(cli token create --role viewer --ttl 1d --description demo-web-page)
    for i in "${!node_names[@]}"; do
        name=${node_names[$i]}
        token=$(cli token create --node "$name" --uses 1 --ttl 10m --description "demo $name")
        echo "reachmap token create --node $name: ${token%%.*}.…"
        # The kernel log is the machine's, shared by every namespace: each
        # node reads a file of its own standing in for /dev/kmsg, so the
        # machine's messages (other fleets' bridges and OOM kills) are not
        # told as this node's.
        : >"$logs/kmsg-$name"
        start "$(ns_of "$name")" "agent-$name" env REACHMAP_CONFIG="$logs/agent.toml" \
            "$bin/reachmap-agent" --collector "https://$hub_addr:7440" --node "$name" \
            --label "role=${node_roles[$i]}" --heartbeat-interval 1s --reconnect-max 1s \
            --poll-interval 2s --state-dir "$logs/agent-state-$name" --kmsg "$logs/kmsg-$name" \
            --enroll-token "$token" --ca-pin "$pin"
    done
}

# ---------------------------------------------------------------- waiting

# Waits until every node is connected.
wait_connected() {
    local deadline=$((SECONDS + connect_timeout)) json connected=0
    while ((SECONDS < deadline)); do
        json=$(cli nodes --format json 2>/dev/null || true)
        connected=$(json_py 'print(sum(1 for n in d if n.get("connected")))' <<<"$json")
        ((${connected:-0} >= ${#node_names[@]})) && return 0
        sleep 0.5
    done
    echo "last answer of reachmap nodes: ${json:-<none>}" >&2
    cli nodes >&2 || true
    fail "only ${connected:-0} of ${#node_names[@]} nodes connected after $connect_timeout s"
}

# The matrix's cells, one a line: SRC DST PORT KIND STATE FAILURE.
matrix_cells() {
    cli matrix --format json 2>/dev/null | json_py '
for c in d.get("cells", []):
    print(c["src"], c["dst"], c["port"], c["kind"], c["state"], c.get("failure") or "-")'
}

# show_cells CELLS: how many cells the matrix has, and those not ok (to stderr).
show_cells() {
    local bad
    bad=$(awk 'NF && $5 != "ok"' <<<"$1")
    echo "the matrix has $(awk 'NF' <<<"$1" | wc -l) cells; not ok (SRC DST PORT KIND STATE FAILURE):" >&2
    echo "${bad:-  none}" >&2
}

# Waits until the fleet is healthy: every cell ok, and the services probed.
wait_healthy() {
    local deadline=$((SECONDS + mesh_timeout)) cells bad ok
    while ((SECONDS < deadline)); do
        cells=$(matrix_cells || true)
        ok=$(awk '$5 == "ok"' <<<"$cells" | wc -l)
        bad=$(awk 'NF && $5 != "ok"' <<<"$cells" | wc -l)
        if ((bad == 0)) &&
            grep -q "^web-1 web-2 8080 tcp ok" <<<"$cells" &&
            grep -q "^web-1 cache-1 6379 tcp ok" <<<"$cells" &&
            grep -q "^web-2 queue-1 5672 tcp ok" <<<"$cells"; then
            echo "all $ok cells ok (probe port, ICMP, and the ports 8080, 6379 and 5672 the nodes listen on)"
            return 0
        fi
        sleep 1
    done
    show_cells "$cells"
    fail "the fleet's matrix was not all ok after $mesh_timeout s"
}

# Waits until the matrix shows the probed faults failing, and nothing else
# failing (cells to web-2 fail for a moment while the plan moves to its new
# address). A missing fault is an error; other cells still failing at the
# deadline are only reported.
wait_faults_in_matrix() {
    local deadline=$((SECONDS + fault_timeout)) cells missing extra i src dst
    while ((SECONDS < deadline)); do
        cells=$(matrix_cells || true)
        missing=()
        for i in "${!fault_src[@]}"; do
            ((fault_probed[i])) || continue
            src=${fault_src[$i]}
            dst=${fault_dst[$i]}
            grep -q "^$src ${dst%:*} ${dst#*:} tcp failing" <<<"$cells" ||
                missing+=("$src -> $dst")
        done
        # Expected too: every node's cell to cache-1:6379, which drops all.
        extra=$(awk 'NF && $5 != "ok" && !($2 == "cache-1" && $3 == 6379) &&
            !($1 == "web-2" && $2 == "queue-1" && $3 == 5672)' <<<"$cells")
        if ((${#missing[@]} == 0)) && [[ -z $extra ]]; then
            echo "the matrix shows the faults (after $((SECONDS - fault_started)) s)"
            return 0
        fi
        sleep 1
    done
    if ((${#missing[@]})); then
        show_cells "$cells"
        fail "after $fault_timeout s the matrix still does not show failing: ${missing[*]}"
    fi
    echo "warning: more cells than the staged faults are not ok:" >&2
    echo "$extra" >&2
}

# why_top SRC DST: "VERDICT CODE NODE" of `reachmap why`'s top cause.
why_top() {
    cli why "$1" "$2" --format json 2>/dev/null | json_py '
c = (d.get("causes") or [{}])[0]
print(d.get("verdict", "-"), c.get("code", "-"), c.get("node", "-"))'
}

# Waits (bounded) until every fault's `why` has the expected top cause;
# records the answers in why_got.
wait_explanations() {
    local deadline=$((SECONDS + fault_timeout)) i pending
    why_got=()
    while :; do
        pending=0
        for i in "${!fault_src[@]}"; do
            why_got[i]=$(why_top "${fault_src[$i]}" "${fault_dst[$i]}" || true)
            [[ ${why_got[$i]} == "unreachable ${fault_code[$i]} ${fault_node[$i]}" ]] ||
                pending=1
        done
        ((pending && SECONDS < deadline)) || break
        sleep 1
    done
}

# ---------------------------------------------------------------- the faults

# run_shown NODE COMMAND...: prints the command as a person would type it on
# the node, then runs it there.
run_shown() {
    local node=$1
    shift
    printf '   %s# %s\n' "$node" "$*"
    in_node "$node" "$@"
}

stage_faults() {
    say "three faults, the way they happen in the field"
    echo "1. db-1's postgres listens on 127.0.0.1:5432 only (listen_addresses = 'localhost'),"
    echo "   since it started: web-1 cannot connect, and no probe can see it."
    echo "2. someone locks down cache-1's redis port with a firewall rule:"
    run_shown cache-1 nft add table inet filter
    run_shown cache-1 nft add chain inet filter input \
        '{ type filter hook input priority 0; policy accept; }'
    run_shown cache-1 nft add rule inet filter input tcp dport 6379 drop \
        comment '"OPS-1234 lock down redis"'
    echo "3. web-2 comes back from a restart with a new address, and queue-1's allow-list"
    echo "   for 5672 (set @fleet) still holds the old one:"
    in_node web-2 sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1
    run_shown web-2 ip addr add "$web2_new_addr/24" dev eth0
    run_shown web-2 ip addr del "${node_addr[web-2]}/24" dev eth0
}

# ---------------------------------------------------------------- the run

say "packages and build"
ensure_packages
ensure_cargo
ensure_python
cargo build --bins

say "fleet: collector in $hub, ${#node_names[@]} nodes"
sweep_leftovers
logs=$(mktemp -d /tmp/rmdemo.XXXXXX)
build_fleet
write_configs
start_services

say "trust: the collector's CA, enrolment tokens, an operator's credentials"
start_trust_and_daemons

say "waiting for ${#node_names[@]} connected nodes (up to $connect_timeout s)"
wait_connected
say "waiting for a healthy probe mesh (up to $mesh_timeout s)"
wait_healthy

fault_started=$SECONDS
stage_faults
say "waiting for the matrix to show them (up to $fault_timeout s)"
wait_faults_in_matrix
wait_explanations

say "reachmap nodes"
cli nodes
say "reachmap matrix"
cli matrix
for i in "${!fault_src[@]}"; do
    say "reachmap why ${fault_src[$i]} ${fault_dst[$i]}    (fault $((i + 1)): expect ${fault_code[$i]})"
    cli why "${fault_src[$i]}" "${fault_dst[$i]}" || true
done

say "the web page and API from this host"
ca_file="$logs/collector-data/tls/ca.crt"
web_ok=1
if ! curl -sf --cacert "$ca_file" -H "Authorization: Bearer $viewer_token" \
    "${web_url}api/v1/nodes" >/dev/null; then
    echo "error: GET ${web_url}api/v1/nodes with the viewer token failed" >&2
    web_ok=0
elif ! curl -s --cacert "$ca_file" -o /dev/null -D - --data-urlencode "token=$viewer_token" \
    "${web_url}login" | grep -qi '^set-cookie: reachmap_token='; then
    echo "error: signing in to ${web_url}login with the viewer token failed" >&2
    web_ok=0
else
    echo "$web_url answers; the viewer token signs in"
fi

say "result"
failed=0
for i in "${!fault_src[@]}"; do
    want="unreachable ${fault_code[$i]} ${fault_node[$i]}"
    if [[ ${why_got[$i]} == "$want" ]]; then
        echo "ok    fault $((i + 1)): why ${fault_src[$i]} ${fault_dst[$i]}: ${fault_code[$i]} on ${fault_node[$i]}"
    else
        echo "FAIL  fault $((i + 1)): why ${fault_src[$i]} ${fault_dst[$i]}: wanted '$want', got '${why_got[$i]}'"
        failed=1
    fi
done
((web_ok)) || failed=1
echo "$((SECONDS - started_at)) s from start to explanations"

if ((check)); then
    if ((failed)); then
        show_logs
        echo "demo check failed" >&2
        exit 1
    fi
    echo "demo check passed"
    exit 0
fi

if ((interactive)); then
    # Commands for the person who ran the demo: with sudo when they used it.
    sudo=""
    [[ -n ${SUDO_USER:-} ]] && sudo="sudo "
    cat <<EOF

The fleet is running.

Web page: $web_url   (from this host; from elsewhere: ssh -L 7441:$hub_link_addr:7441 THIS-HOST,
          then https://localhost:7441/). The certificate is signed by the demo collector's
          own CA, which your browser does not know (accept the warning, or import
          $ca_file)
          Sign in with this viewer token:
          $viewer_token

The CLI, from this host, as the demo's operator (client certificate issued by the collector):
  alias reachmap='${sudo}$bin/reachmap --collector $collector_url --credentials $logs/operator.pem'
  reachmap why web-1 db-1:5432
  reachmap why web-2 queue-1:5672 --format json
  reachmap history web-1 cache-1:6379 --since 10m
  reachmap events --since 10m
  reachmap events cache-1 --type firewall_changed
  reachmap node db-1
  reachmap test-port web-1 cache-1:9000
  ${sudo}curl --cacert $ca_file -H 'Authorization: Bearer $viewer_token' ${web_url}api/v1/matrix

Fix a fault and watch its cells recover (degraded while the probe window still holds
failures, ok within about 20 s; then ask \`reachmap history\`):
  ${sudo}ip netns exec $(ns_of cache-1) nft flush chain inet filter input
  ${sudo}ip netns exec $(ns_of queue-1) nft add element inet filter fleet '{ $web2_new_addr }'

Logs: $logs
Press Enter or Ctrl-C to tear it down.
EOF
    trap 'exit 0' INT
    read -r _ || true
fi
exit "$failed"
