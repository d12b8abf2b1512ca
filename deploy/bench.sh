#!/usr/bin/env bash
# Benchmarks, run as root on the machine being measured:
#   sudo deploy/bench.sh host-facts   # snapshot vs ss/nft/ip, daemon RSS and CPU, event latency
#   sudo deploy/bench.sh loadgen      # collector with 1,000 simulated agents (AGENTS, DURATION; ZONES=20 for sparse plans)
#   sudo deploy/bench.sh firewall     # the agent on 20,000 iptables-nft rules, idle and churning
#   sudo deploy/bench.sh findings     # findings and what-if on 1,000 simulated agents with a partition
#   sudo deploy/bench.sh plan         # probe planning of 10,000 nodes in 20 zones (NODES, ZONES)
#   sudo deploy/bench.sh store-postgres  # the store's history on SQLite and on PostgreSQL, side by side (NODES, DAYS)
#   sudo deploy/bench.sh two-collectors  # 2,000 simulated agents on two collectors sharing PostgreSQL, failover, and the embedded store beside (AGENTS, DURATION, EVENTS)
# Builds release binaries first; the figures go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/common.sh
[[ $EUID -eq 0 ]] || { echo "run as root: sudo $0 $*" >&2; exit 1; }
ensure_cargo
ensure_packages
which="${1:-host-facts}"

# A throwaway PostgreSQL cluster (Debian's binaries) on 127.0.0.1:55439 with
# TLS from a CA made here: sets pgbin, pgdir, pg_url; stop_bench_postgres
# removes it.
start_bench_postgres() {
  command -v openssl >/dev/null || apt-get install -y openssl
  pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin | sort -V | tail -1)
  pgdir=$(mktemp -d /tmp/reachmap-bench-pg-XXXXXX)
  chown postgres "$pgdir"
  trap stop_bench_postgres EXIT
  runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust >/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=reachmap-bench-db-ca \
    -keyout "$pgdir/ca.key" -out "$pgdir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$pgdir/server.key" -out "$pgdir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$pgdir/san"
  openssl x509 -req -days 2 -in "$pgdir/server.csr" -CA "$pgdir/ca.crt" -CAkey "$pgdir/ca.key" \
    -CAcreateserial -extfile "$pgdir/san" -out "$pgdir/server.crt" 2>/dev/null
  chown postgres "$pgdir/server.key" "$pgdir/server.crt"
  chmod 600 "$pgdir/server.key"
  local port=55439
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -w -l "$pgdir/log" \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=200 -c ssl=on -c ssl_cert_file=$pgdir/server.crt -c ssl_key_file=$pgdir/server.key" \
    start >/dev/null
  psql -X -q -h "$pgdir" -p "$port" -U postgres \
    -c "CREATE ROLE reachmap LOGIN PASSWORD 'reachmap'" -c "CREATE DATABASE reachmap OWNER reachmap"
  pg_url="postgres://reachmap:reachmap@127.0.0.1:$port/reachmap?sslmode=require"
}

stop_bench_postgres() {
  [[ -n ${pgdir:-} ]] || return 0
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
cargo build --release --bins
case "$which" in
  store-postgres)
    # The same history (every cell coming up, 1 % flapping, 200 events per
    # node a day) written through the store's writer and asked back, first
    # into a SQLite file, then into a throwaway PostgreSQL cluster (Debian's,
    # on loopback, fsync on as in production), made and removed here.
    cargo build --release -p reachmap-collector --example store_bench
    start_bench_postgres
    echo "==== store_bench: SQLite"
    target/release/examples/store_bench "${NODES:-300}" "${DAYS:-1}"
    echo "==== store_bench: PostgreSQL ($("$pgbin/postgres" --version))"
    STORE_URL="$pg_url" STORE_CA="$pgdir/ca.crt" \
      target/release/examples/store_bench "${NODES:-300}" "${DAYS:-1}"
    ;;
  two-collectors)
    # 2,000 simulated agents over mutual TLS on two collectors sharing a
    # throwaway PostgreSQL (verified TLS, loopback): two load generators of
    # AGENTS/2 each, one per collector, run at once; the first one's agents
    # also know the second collector, and at the end the first collector is
    # killed -9 and their move is timed. Then one collector on the embedded
    # store with AGENTS/2 agents, for the same machine's figures side by side.
    cargo build --release -p reachmap-collector --example loadgen --bins
    start_bench_postgres
    agents="${AGENTS:-2000}" half=$((${AGENTS:-2000} / 2))
    ulimit -n $((agents * 2 + 1024))
    work=$(mktemp -d /tmp/reachmap-bench-two-XXXXXX)
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true; stop_bench_postgres; rm -rf "$work"' EXIT
    common=(--store "$pg_url" --store-ca "$pgdir/ca.crt" --probe-interval 10s --full-mesh-max "$agents")
    target/release/reachmap-collector --listen 127.0.0.1:17440 --http 127.0.0.1:17441 \
      --data-dir "$work/a" --collector-name collector-a "${common[@]}" 2>"$work/a.log" &
    pids+=($!) pid_a=$!
    for _ in $(seq 100); do [[ -f $work/a/tls/ca.key ]] && break; sleep 0.1; done
    target/release/reachmap-collector --listen 127.0.0.1:17450 --http 127.0.0.1:17451 \
      --data-dir "$work/b" --collector-name collector-b --ca-cert "$work/a/tls/ca.crt" \
      --ca-key "$work/a/tls/ca.key" "${common[@]}" 2>"$work/b.log" &
    pids+=($!) pid_b=$!
    run_gen() {
      target/release/examples/loadgen --agents "$half" --data-dir "$work/a" \
        --probe-interval 10s --duration "${DURATION:-60s}" --cli target/release/reachmap \
        --events-per-second "${EVENTS:-5000}" "$@"
    }
    echo "==== two collectors on PostgreSQL: $agents agents, $half on each"
    run_gen --collector https://127.0.0.1:17440,https://127.0.0.1:17450 --http 127.0.0.1:17441 \
      --pid "$pid_a" --failover >"$work/gen-a.out" 2>&1 &
    gen_a=$!
    run_gen --collector https://127.0.0.1:17450 --http 127.0.0.1:17451 --pid "$pid_b" \
      --first-index "$half" --address-base 198.19.64.0 >"$work/gen-b.out" 2>&1 || echo "loadgen on collector-b failed"
    wait "$gen_a" || echo "loadgen on collector-a failed"
    echo "---- collector-a (its agents fail over to collector-b at the end)"
    cat "$work/gen-a.out"
    echo "---- collector-b"
    cat "$work/gen-b.out"
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "==== one collector on the embedded store: $half agents"
    target/release/examples/loadgen --agents "$half" --collector https://127.0.0.1:17460 \
      --http 127.0.0.1:17461 --spawn target/release/reachmap-collector --probe-interval 10s \
      --duration "${DURATION:-60s}" --cli target/release/reachmap --events-per-second "${EVENTS:-5000}"
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
    echo "unknown benchmark: $which (known: host-facts, firewall, loadgen, findings, plan, store-postgres, two-collectors)" >&2
    exit 2
    ;;
esac
