# shellcheck shell=bash
# Shared by deploy/test.sh, demo.sh, package.sh and check-systemd.sh (sourced, not executed).

# Installs the system packages the fleet needs, only when a tool is missing,
# so a warm machine pays nothing.
ensure_packages() {
    local missing=() tool
    # chromium: the web page's browser test (tests/e2e/web.rs); curl: HTTP
    # checks in the end-to-end tests; prometheus: the scrape of /metrics
    # with a viewer token (tests/e2e/trust.rs).
    for tool in ip nft iptables ping systemd-analyze chromium curl prometheus; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    # postgresql: the server binaries (initdb, pg_ctl) for the throwaway
    # servers the tests start (tests/harness/postgres.rs).
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    if ((${#missing[@]} == 0)); then
        echo "ip, nft, iptables, ping, systemd-analyze, chromium, curl, prometheus and postgresql are installed"
        return
    fi
    echo "missing: ${missing[*]}; installing packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y \
        iproute2 iptables nftables iputils-ping systemd chromium curl
    # Only the server: the test starts its own, in a namespace.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        # Only the binaries: no Debian cluster (nor its service) is made,
        # the tests run their own servers.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" \
            >/etc/postgresql-common/createcluster.d/reachmap-tests.conf
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
    fi
}

# Under sudo, cargo is usually not on root's PATH: fall back to the invoking
# user's rustup installation.
ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return
    if [[ -n "${SUDO_USER:-}" ]]; then
        local home
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [[ -x "$home/.cargo/bin/cargo" ]]; then
            export PATH="$home/.cargo/bin:$PATH"
            export CARGO_HOME="${CARGO_HOME:-$home/.cargo}"
            export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
            return
        fi
    fi
    echo "cargo not found; install Rust (https://rustup.rs) or run with" \
        "sudo env PATH=\"\$PATH\" $0" >&2
    exit 1
}

# Kills whatever still runs inside a namespace, then deletes it.
remove_netns() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
}

# sweep_stale_netns PREFIX: removes the namespaces PREFIX-<pid>-... of an
# earlier run whose script (that pid) is gone.
sweep_stale_netns() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns =~ ^$1-([0-9]+)- ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -d /proc/$pid ]] && continue
        echo "removing leftover namespace $ns"
        remove_netns "$ns"
    done
}

# stop_pids PID...: SIGTERM, up to 5 s for them to go, then SIGKILL.
stop_pids() {
    local pid i alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}
