#!/usr/bin/env bash
# Benchmarks, run as root on the machine being measured:
#   sudo deploy/bench.sh host-facts   # snapshot vs ss/nft/ip, daemon RSS and CPU, event latency
#   sudo deploy/bench.sh loadgen      # collector with 1,000 simulated agents (AGENTS, DURATION; ZONES=20 for sparse plans)
#   sudo deploy/bench.sh firewall     # the agent on 20,000 iptables-nft rules, idle and churning
#   sudo deploy/bench.sh findings     # findings and what-if on 1,000 simulated agents with a partition
#   sudo deploy/bench.sh plan         # probe planning of 10,000 nodes in 20 zones (NODES, ZONES)
#   sudo deploy/bench.sh store-postgres  # the store's history on SQLite and on PostgreSQL, side by side (NODES, DAYS)
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
  store-postgres)
    # The same history (every cell coming up, 1 % flapping, 200 events per
    # node a day) written through the store's writer and asked back, first
    # into a SQLite file, then into a throwaway PostgreSQL cluster (Debian's,
    # on loopback, fsync on as in production), made and removed here.
    cargo build --release -p reachmap-collector --example store_bench
    pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin | sort -V | tail -1)
    pgdir=$(mktemp -d /tmp/reachmap-bench-pg-XXXXXX)
    chown postgres "$pgdir"
    trap 'runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
    runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust >/dev/null
    port=55439
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -w -l "$pgdir/log" \
      -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
    psql -X -q -h "$pgdir" -p "$port" -U postgres \
      -c "CREATE ROLE reachmap LOGIN PASSWORD 'reachmap'" -c "CREATE DATABASE reachmap OWNER reachmap"
    echo "==== store_bench: SQLite"
    target/release/examples/store_bench "${NODES:-300}" "${DAYS:-1}"
    echo "==== store_bench: PostgreSQL ($("$pgbin/postgres" --version))"
    STORE_URL="postgres://reachmap:reachmap@127.0.0.1:$port/reachmap?sslmode=disable" \
      target/release/examples/store_bench "${NODES:-300}" "${DAYS:-1}"
    ;;
  host-facts)
    REACHMAP_BIN_DIR="$PWD/target/release" cargo bench -p reachmap-fleet-tests --bench host_facts
    ;;
  firewall)
    # A kube-proxy-like nat table rewritten a few rules a second, beside the
    # same host idle (BENCH_FW_RULES, BENCH_FW_SECS, BENCH_FW_CHAINS).
    REACHMAP_BIN_DIR="$PWD/target/release" cargo bench -p reachmap-fleet-tests --bench firewall_churn
    ;;
  loadgen)
    # A real collector on loopback ports, started and stopped by the load
    # generator; simulated agents speak the real protocol to it over mutual
    # TLS, then the same run in plaintext (--insecure) to compare (no
    # namespaces, no traffic beyond 127.0.0.0/8). Each run ends with every
    # agent reconnecting at once after the collector is killed and restarted.
    # Beside their probe results the agents send EVENTS host events a second
    # (default 20,000), each acked only once the collector's store committed it.
    cargo build --release -p reachmap-collector --example loadgen --bins
    agents="${AGENTS:-1000}" grpc=127.0.0.1:17440 http=127.0.0.1:17441
    ulimit -n $((agents * 2 + 1024))
    for mode in tls plaintext; do
      echo "==== loadgen: $agents agents, $mode"
      if [[ $mode == tls ]]; then
        url="https://$grpc" extra=()
      else
        url="http://$grpc" extra=(--insecure)
      fi
      target/release/examples/loadgen --agents "$agents" --collector "$url" --http "$http" \
        --spawn target/release/reachmap-collector --probe-interval 10s \
        --duration "${DURATION:-60s}" --cli target/release/reachmap \
        --events-per-second "${EVENTS:-20000}" --zones "${ZONES:-0}" "${extra[@]}"
    done
    ;;
  findings)
    # The load generator's fleet over mutual TLS with a partition staged
    # (half the agents cut from the other half): /api/v1/findings timed in
    # every query round, and what-if of a 5,000-rule ruleset for one agent
    # against its cells, over gRPC.
    cargo build --release -p reachmap-collector --example loadgen --bins
    agents="${AGENTS:-1000}"
    ulimit -n $((agents * 2 + 1024))
    target/release/examples/loadgen --agents "$agents" --collector https://127.0.0.1:17440 \
      --http 127.0.0.1:17441 --spawn target/release/reachmap-collector --probe-interval 10s \
      --duration "${DURATION:-30s}" --cli target/release/reachmap --partition
    ;;
  plan)
    cargo build --release -p reachmap-collector --example plan_bench
    target/release/examples/plan_bench "${NODES:-10000}" "${ZONES:-20}"
    ;;
  *)
    echo "unknown benchmark: $which (known: host-facts, firewall, loadgen, findings, plan)" >&2
    exit 2
    ;;
esac
