# Shared by deploy/test.sh and deploy/demo.sh (sourced, not executed).

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
    if ((${#missing[@]} == 0)); then
        echo "ip, nft, iptables, ping, systemd-analyze, chromium, curl and prometheus are installed"
        return
    fi
    echo "missing: ${missing[*]}; installing packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y \
        iproute2 iptables nftables iputils-ping systemd chromium curl
    # Only the server: the test starts its own, in a namespace.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
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
