#!/usr/bin/env bash
# Checks of the systemd units in deploy/systemd, on a machine without
# systemd as PID 1 (a container, CI). Usage:
#   deploy/check-systemd.sh [--units DIR] [--no-sandbox] [--keep] [BIN_DIR]
# BIN_DIR holds reachmap-agent, reachmap-collector and reachmap (default
# target/debug); --units checks another copy of the units (to see a check
# fail); --keep keeps the logs and traces (they are kept on failure anyway).
# Three checks:
#  1. verify: `systemd-analyze verify` of the units with ExecStart pointed
#     at BIN_DIR; any message about them is a failure.
#  2. exposure: `systemd-analyze security --offline=yes` of each unit at most
#     its bound below.
#  3. sandbox (root; skipped with --no-sandbox): the binaries run as the
#     units would run them, as far as that can be done without systemd: an
#     unprivileged user holding only the unit's capabilities (ambient,
#     inheritable and bounding set) with no_new_privs (setpriv), /proc
#     mounted with the unit's ProtectProc=/ProcSubset= (unshare), and the
#     unit's seccomp filters loaded by deploy/systemd/sandbox.py
#     (SystemCallFilter= resolved by `systemd-analyze syscall-filter`,
#     SystemCallErrorNumber=, RestrictAddressFamilies=, RestrictNamespaces=,
#     MemoryDenyWriteExecute=, LockPersonality=), each under `strace -f`.
#     a) `reachmap-agent snapshot` in a namespace with an nftables table, an
#        iptables-legacy rule and a listener of another user must read
#        every part, with the same facts, as root does;
#     b) a fleet (a collector and two agents in namespaces, enrolled over
#        TLS) must come up: both agents /readyz with every source reading,
#        TCP and ICMP probes ok both ways, a test-port temporary listener;
#     and every system call the traced processes and their children (nft,
#     iptables-save) made must be allowed by the filter, every socket
#     family by RestrictAddressFamilies=, and no file may be written
#     outside the state directory (ProtectSystem=strict).
#     Not emulated: ProtectSystem=/ProtectHome=/PrivateTmp= and the other
#     mount options (checked instead through the traced writes), DevicePolicy=
#     (the only device read is /dev/kmsg), PrivateMounts=, RestrictSUIDSGID=,
#     RestrictRealtime= (its calls are outside the filter anyway).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
# shellcheck source=deploy/common.sh
source deploy/common.sh

units=deploy/systemd
bin_dir=$repo/target/debug
sandbox=1
keep=0
while (($#)); do
    case $1 in
    --units) units=$2; shift 2 ;;
    --no-sandbox) sandbox=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) bin_dir=$(cd "$1" && pwd); shift ;;
    esac
done
units=$(cd "$units" && pwd)
readonly units bin_dir sandbox
# The bounds: the agent's was 3.1 before its hardening; the collector's
# is where it is today.
declare -A max_exposure=([reachmap-agent]=2.5 [reachmap-collector]=1.2)
readonly py=/usr/bin/python3 helper=$repo/deploy/systemd/sandbox.py
readonly prefix="rmchk-$$"

failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}

work=$(mktemp -d /tmp/rmchk.XXXXXX)
# The units' users read the unit copies and filter lists in here.
chmod 0755 "$work"
created=()
pids=()
cleanup() {
    local rc=$? ns
    stop_pids "${pids[@]}"
    for ns in "${created[@]}"; do remove_netns "$ns"; done
    if ((rc == 0 && !keep)); then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT


add_netns() {
    ip netns add "$1"
    created+=("$1")
    ip -n "$1" link set lo up
}

# unit_value UNIT KEY: the last value of KEY in UNIT's [Service] section.
unit_value() {
    awk -v key="$2" '
        /^\[/ { section = $0; next }
        section == "[Service]" && index($0, key "=") == 1 { value = substr($0, length(key) + 2) }
        END { print value }' "$1"
}

section() {
    printf '\n---- %s\n' "$*"
}

# ---------------------------------------------------------------- verify
section "systemd-analyze verify"
for unit in reachmap-agent reachmap-collector; do
    [[ -x "$bin_dir/$unit" ]] || { echo "$bin_dir/$unit was not built" >&2; exit 1; }
    sed "s#^ExecStart=/usr/bin/$unit #ExecStart=$bin_dir/$unit #" "$units/$unit.service" >"$work/$unit.service"
    if ! grep -q "^ExecStart=$bin_dir/$unit " "$work/$unit.service"; then
        fail "$units/$unit.service: no 'ExecStart=/usr/bin/$unit ...' line"
    fi
done
# systemd-analyze verify exits 0 on unknown directives and invalid values (it
# only logs them), so any message about our units counts as a failure.
set +e
report=$(systemd-analyze verify --man=no "$work"/reachmap-agent.service "$work"/reachmap-collector.service 2>&1)
status=$?
set -e
[[ -n "$report" ]] && echo "$report"
if ((status != 0)) || grep -q 'reachmap-' <<<"$report"; then
    fail "systemd-analyze verify found problems in $units (exit status $status)"
else
    echo "reachmap-agent.service and reachmap-collector.service verified"
fi

# ---------------------------------------------------------------- exposure
section "systemd-analyze security (exposure)"
for unit in reachmap-agent reachmap-collector; do
    level=$(systemd-analyze security --offline=yes --no-pager "$work/$unit.service" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p')
    if [[ -z $level ]]; then
        fail "$unit.service: no exposure level from systemd-analyze security"
    elif awk -v l="$level" -v m="${max_exposure[$unit]}" 'BEGIN { exit !(l > m) }'; then
        fail "$unit.service: exposure $level, above ${max_exposure[$unit]}"
    else
        echo "$unit.service: exposure $level (at most ${max_exposure[$unit]})"
    fi
done

if ((!sandbox)); then
    ((failed)) && exit 1
    echo "units checked (sandbox skipped)"
    exit 0
fi

# ---------------------------------------------------------------- sandbox
section "sandbox: tools"
if [[ $(id -u) -ne 0 ]]; then
    echo "the sandbox check runs binaries as other users in namespaces: run it as root (or --no-sandbox)" >&2
    exit 1
fi
need=()
command -v strace >/dev/null || need+=(strace)
command -v setpriv >/dev/null || need+=(util-linux)
command -v nft >/dev/null || need+=(nftables)
command -v iptables-legacy >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
"$py" -c 'import seccomp' 2>/dev/null || need+=(python3-seccomp)
if ((${#need[@]})); then
    echo "installing ${need[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
echo "strace, setpriv, nft, iptables-legacy and python3-seccomp are installed"
# Namespaces of an earlier run whose script is gone (rmchk-<pid>-...).
sweep_stale_netns rmchk
# Copies, so that a build finishing meanwhile cannot swap a binary between
# two runs; the traces name these paths.
mkdir "$work/bin"
cp "$bin_dir/reachmap-agent" "$bin_dir/reachmap-collector" "$bin_dir/reachmap" "$work/bin/"
bin=$work/bin

# The users the units run as: a fixed unprivileged uid stands in for the
# agent's reachmap-agent and for the collector's DynamicUser=.
declare -A uid=([reachmap-agent]=64601 [reachmap-collector]=64602)
for unit in reachmap-agent reachmap-collector; do
    "$py" "$helper" allowlist "$work/$unit.service" >"$work/$unit.allow"
    echo "$unit.service allows $(wc -l <"$work/$unit.allow") system calls"
done

# caps_arg KEY UNIT: the unit's capability list in setpriv's syntax.
caps_arg() {
    local caps out=-all c
    caps=$(unit_value "$2" "$1")
    for c in $caps; do out+=",+${c#CAP_}"; done
    tr '[:upper:]' '[:lower:]' <<<"$out"
}

# sandboxed UNIT NETNS LOG -- COMMAND...: COMMAND run as UNIT would run it
# (see the top of this file) in NETNS, traced into LOG.
sandboxed() {
    local unit=$1 ns=$2 log=$3
    shift 4
    local file="$work/$unit.service" proc_opts=() hidepid subset
    hidepid=$(unit_value "$file" ProtectProc)
    subset=$(unit_value "$file" ProcSubset)
    [[ -n $hidepid && $hidepid != default ]] && proc_opts+=("hidepid=$hidepid")
    [[ $subset == pid ]] && proc_opts+=("subset=pid")
    local opts
    opts=$(IFS=,; echo "${proc_opts[*]:-defaults}")
    [[ $(unit_value "$file" NoNewPrivileges) == yes ]] || { fail "$unit: no NoNewPrivileges=yes"; }
    # shellcheck disable=SC2016 # expanded by the inner sh
    ip netns exec "$ns" unshare --mount --propagation private -- sh -c \
        'mount -t proc -o "$1" proc /proc && shift && exec "$@"' sh "$opts" \
        strace -f -qq -s 256 -o "$log" \
        setpriv --reuid="${uid[$unit]}" --regid="${uid[$unit]}" --clear-groups \
        --bounding-set="$(caps_arg CapabilityBoundingSet "$file")" \
        --inh-caps="$(caps_arg AmbientCapabilities "$file")" \
        --ambient-caps="$(caps_arg AmbientCapabilities "$file")" \
        --no-new-privs -- \
        "$py" "$helper" exec "$file" "$work/$unit.allow" -- "$@"
}

# trace_check UNIT LOG WRITABLE...: the traced calls against the unit.
trace_check() {
    local unit=$1 log=$2
    shift 2
    local writable=("$@")
    [[ $(unit_value "$work/$unit.service" PrivateTmp) == yes ]] && writable+=(/tmp)
    echo "$unit ($(basename "$log")):"
    if ! "$py" "$helper" trace-check "$work/$unit.service" "$work/$unit.allow" \
        "$bin/$unit" "$log" "${writable[@]}" | sed 's/^/  /'; then
        fail "$unit: its traced run did what the unit does not allow ($log)"
    fi
}

section "sandbox: reachmap-agent snapshot, as root and as the unit runs it"
ns="$prefix-snap"
add_netns "$ns"
ip -n "$ns" link add eth0 type veth peer name eth1
ip -n "$ns" addr add 198.18.251.1/24 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set eth1 up
ip netns exec "$ns" nft 'add table inet rmchk; add chain inet rmchk in { type filter hook input priority 0; policy accept; }; add rule inet rmchk in tcp dport 9 drop'
ip netns exec "$ns" iptables-legacy -A INPUT -p tcp --dport 10 -j DROP
# A listener of another user: its process is attributed only with
# CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE.
ip netns exec "$ns" setpriv --reuid=daemon --regid=daemon --clear-groups "$py" -c '
import socket, time
s = socket.socket(); s.bind(("198.18.251.1", 7999)); s.listen(); time.sleep(600)' &
disown $!  # it goes with its namespace, without a "Killed" line
for ((i = 0; i < 50; i++)); do
    ip netns exec "$ns" ss -Htln 'sport = :7999' | grep -q . && break
    sleep 0.1
done
ip netns exec "$ns" "$bin/reachmap-agent" snapshot --format json >"$work/snapshot-root.json"
sandboxed reachmap-agent "$ns" "$work/agent-snapshot.strace" -- \
    "$bin/reachmap-agent" snapshot --format json >"$work/snapshot-sandbox.json" ||
    fail "reachmap-agent snapshot failed in the sandbox"
if ! "$py" "$helper" compare-snapshots "$work/snapshot-root.json" "$work/snapshot-sandbox.json"; then
    fail "reachmap-agent snapshot in the sandbox misses facts root reads"
fi
trace_check reachmap-agent "$work/agent-snapshot.strace"
remove_netns "$prefix-snap"

section "sandbox: a collector and two agents"
readonly hub="$prefix-hub" hub_addr=198.18.252.1
readonly collector_url="https://$hub_addr:7440"
add_netns "$hub"
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add "$hub_addr/24" dev br0
ip -n "$hub" link set br0 up
for i in 0 1; do
    ns="$prefix-n$i"
    add_netns "$ns"
    ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "v$i" master br0
    ip -n "$hub" link set "v$i" up
    ip -n "$ns" addr add "198.18.252.$((11 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$hub_addr"
done
data="$work/collector-data"
mkdir -m 0700 "$data"
collector_cmd() {
    "$bin/reachmap-collector" --data-dir "$data" --listen "$hub_addr:7440" \
        --http "$hub_addr:7441" "$@"
}
pin=$(collector_cmd ca init)
token=$(collector_cmd token create --uses 2 --ttl 10m --description check-systemd)
collector_cmd issue-client check-operator --role operator -o "$work/operator.pem" >/dev/null
chown -R "${uid[reachmap-collector]}:${uid[reachmap-collector]}" "$data"
# The example configs (deploy/config), as the units' ExecStart= reads them;
# the flags put the daemons on this fleet's addresses and directories.
cp deploy/config/agent.toml deploy/config/collector.toml "$work/"
sandboxed reachmap-collector "$hub" "$work/collector.strace" -- \
    "$bin/reachmap-collector" --config "$work/collector.toml" --listen "$hub_addr:7440" --http "$hub_addr:7441" \
    --data-dir "$data" --probe-interval 1s >"$work/collector.log" 2>&1 &
pids+=($!)
for i in 0 1; do
    state="$work/agent-state-$i"
    mkdir -m 0700 "$state"
    chown "${uid[reachmap-agent]}:${uid[reachmap-agent]}" "$state"
    sandboxed reachmap-agent "$prefix-n$i" "$work/agent-$i.strace" -- \
        "$bin/reachmap-agent" --config "$work/agent.toml" --collector "$collector_url" --node "node-$i" \
        --heartbeat-interval 1s --reconnect-max 1s --poll-interval 1s --socket-poll-interval 1s \
        --state-dir "$state" --enroll-token "$token" --ca-pin "$pin" \
        >"$work/agent-$i.log" 2>&1 &
    pids+=($!)
done
cli() {
    ip netns exec "$hub" "$bin/reachmap" --collector "$collector_url" \
        --credentials "$work/operator.pem" "$@"
}
readyz() {
    ip netns exec "$prefix-n$1" "$py" -c '
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:7443/readyz", timeout=2)
    print(r.read().decode(), end="")
except urllib.error.HTTPError as e:
    print(e.read().decode(), end="")
except Exception as e:
    print(f"not answering: {e}")' 2>&1
}
# Every source reading on both agents (readyz lines all [+]), then the probe
# mesh: tcp/7442 and icmp ok both ways.
ready=0
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    ok=0
    for i in 0 1; do
        r=$(readyz "$i")
        if [[ $(head -n1 <<<"$r") == ready ]] && ! grep -q '^\[[-!]\]' <<<"$r" &&
            [[ $(grep -c '^\[+\]' <<<"$r") -ge 8 ]]; then
            ok=$((ok + 1))
        fi
    done
    ((ok == 2)) && { ready=1; break; }
    sleep 0.5
done
for i in 0 1; do
    echo "node-$i /readyz:"
    readyz "$i" | sed 's/^/  /'
done
if ((!ready)); then
    fail "the sandboxed agents did not both get ready with every source reading within 60 s"
    for f in collector agent-0 agent-1; do
        echo "----- tail of $work/$f.log" >&2
        tail -n 15 "$work/$f.log" >&2
    done
fi
cells=0
json=""
deadline=$((SECONDS + 60))
while ((ready && SECONDS < deadline)); do
    json=$(cli matrix --format json 2>/dev/null || true)
    cells=$("$py" -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError:
    print(0); sys.exit()
print(sum(1 for c in d.get("cells", []) if c.get("state") == "ok" and c.get("src") != c.get("dst")
          and (c.get("kind"), c.get("port")) in (("tcp", 7442), ("icmp", 0), ("icmp", None))))' "$json")
    ((cells >= 4)) && break
    sleep 0.5
done
cli matrix || true
printf '%s\n' "$json" >"$work/matrix.json"
echo "$cells of the 4 cells tcp/7442 and icmp between node-0 and node-1 ok"
((cells >= 4)) || fail "the sandboxed agents' tcp/7442 and icmp probes were not ok both ways within 60 s ($cells of 4 cells ok)"
if out=$(cli test-port node-0 node-1:9000 2>&1); then
    echo "$out"
else
    echo "$out"
    fail "test-port node-0 node-1:9000 between the sandboxed agents failed"
fi
for i in 0 1; do
    [[ -n $(ls -A "$work/agent-state-$i") ]] || fail "node-$i wrote nothing to its state directory"
done
# Changes on node-1 while it runs: the nftables notification group and
# rtnetlink's must reach its sandboxed agent.
ip netns exec "$prefix-n1" nft 'add table inet rmchk; add chain inet rmchk in { type filter hook input priority 0; policy accept; }; add rule inet rmchk in tcp dport 9 drop'
ip -n "$prefix-n1" addr add 198.18.252.112/24 dev eth0
seen=0
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    cli node node-1 --format json >"$work/node-1.json" 2>&1 || true
    cli events node-1 --type firewall_changed >"$work/events-1.txt" 2>&1 || true
    if "$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(not ("198.18.252.112" in d["node"]["addresses"] and not d["node"]["unhealthy_sources"]
              and not d["node"]["blind"]))' "$work/node-1.json" 2>/dev/null &&
        grep -q firewall_changed "$work/events-1.txt"; then
        seen=1
        break
    fi
    sleep 0.5
done
if ((seen)); then
    echo "node-1's sandboxed agent reported a new nftables rule (firewall_changed) and a new address; no blind or unhealthy source"
else
    fail "node-1's sandboxed agent did not report an nftables change and a new address within 30 s ($work/node-1.json, $work/events-1.txt)"
fi
# Let the polled readers (resources, iptables-legacy, connection counts,
# every second here) run a few times under the trace.
sleep 3

# Stop them with SIGTERM, as systemctl stop does, so that the traces are
# complete: the process running BINARY in each namespace (strace would only
# detach if it were signalled instead).
stop_in_netns() {
    local ns=$1 binary=$2 pid
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$binary" ]] && kill -TERM "$pid" 2>/dev/null
    done
    return 0
}
for i in 0 1; do stop_in_netns "$prefix-n$i" "$bin/reachmap-agent"; done
stop_in_netns "$hub" "$bin/reachmap-collector"
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
for i in 0 1; do trace_check reachmap-agent "$work/agent-$i.strace" "$work/agent-state-$i"; done
trace_check reachmap-collector "$work/collector.strace" "$data"

section "result"
if ((failed)); then
    echo "deploy/check-systemd.sh: FAILED (see FAIL lines above)" >&2
    exit 1
fi
echo "systemd units verified, exposure within bounds, binaries run in the units' sandbox"
