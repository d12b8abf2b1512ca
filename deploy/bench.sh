#!/usr/bin/env bash
# Benchmarks, run as root on the machine being measured:
#   sudo deploy/bench.sh host-facts   # snapshot vs ss/nft/ip, daemon RSS and CPU, event latency
# Builds release binaries first; the figures go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/common.sh
[[ $EUID -eq 0 ]] || { echo "run as root: sudo $0 $*" >&2; exit 1; }
ensure_cargo
ensure_packages
which="${1:-host-facts}"
cargo build --release --bins
case "$which" in
  host-facts)
    REACHMAP_BIN_DIR="$PWD/target/release" cargo bench -p reachmap-fleet-tests --bench host_facts
    ;;
  *)
    echo "unknown benchmark: $which (known: host-facts)" >&2
    exit 2
    ;;
esac
