#!/usr/bin/env bash
# The project's test command: formatting, lints, build, every test (including
# the end-to-end fleet tests, which need root), and a check of the systemd
# units. Usage: sudo deploy/test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

# shellcheck source=deploy/common.sh
source deploy/common.sh

section() {
    printf '\n==== %s ====\n' "$*"
}

section "tools"
ensure_packages
ensure_cargo

section "cargo fmt"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins

section "demo (deploy/demo.sh --check)"
# The README's demo, non-interactively: three real faults staged, and each
# one's `why` must name its cause.
if [[ $(id -u) -eq 0 || ${CI:-} == true ]]; then
    deploy/demo.sh --check
else
    echo "note: not root; the demo check is skipped"
fi

section "kubernetes manifests"
# kustomize renders, strict schema validation, every flag and variable a
# manifest passes exists in the binaries' --help, capabilities as the unit's.
deploy/check-manifests.sh "$repo/target/debug"

section "cargo test"
if [[ $(id -u) -ne 0 ]]; then
    echo "note: not root; the fleet tests will be skipped (CI=${CI:-unset})"
fi
cargo test --workspace --no-fail-fast

section "systemd units"
# The units start /usr/local/bin/..., which a test machine does not have:
# verify copies whose ExecStart points at the binaries just built.
bin_dir="$repo/target/debug"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in reachmap-agent reachmap-collector; do
    src="deploy/systemd/$unit.service"
    [[ -x "$bin_dir/$unit" ]] || { echo "$bin_dir/$unit was not built" >&2; exit 1; }
    sed "s#^ExecStart=/usr/local/bin/$unit #ExecStart=$bin_dir/$unit #" "$src" >"$work/$unit.service"
    if ! grep -q "^ExecStart=$bin_dir/$unit " "$work/$unit.service"; then
        echo "$src: no 'ExecStart=/usr/local/bin/$unit ...' line to rewrite" >&2
        exit 1
    fi
done
# systemd-analyze verify exits 0 on unknown directives and invalid values (it
# only logs them), so any message about our units counts as a failure.
set +e
report=$(systemd-analyze verify --man=no "$work"/*.service 2>&1)
status=$?
set -e
if [[ -n "$report" ]]; then
    echo "$report"
fi
if ((status != 0)) || grep -q 'reachmap-' <<<"$report"; then
    echo "systemd-analyze verify found problems in deploy/systemd (exit status $status)" >&2
    exit 1
fi
echo "deploy/systemd/reachmap-agent.service and reachmap-collector.service verified"

section "all checks passed"
