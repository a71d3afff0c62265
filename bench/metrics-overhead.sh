#!/usr/bin/env bash
# The cost of metrics on the hot path (issue 24): `nacre bench` put and get
# against a single node whose admin listener is scraped (`/metrics`) every
# second, and against the same build with the admin listener off
# (`--no-admin`). The two alternate run by run, the first one rotating each
# round, so that the machine's drift falls on both.
#
#   bench/metrics-overhead.sh [--rounds 3] [--duration 10] [--warmup 1]
#       [--clients 64] [--connections 8] [--workloads put,get]
#
# Builds nacre in release mode; each run starts a fresh node (data under a
# temporary directory on the repository's disk), measures, and stops it.
# Prints one JSON line per run, then per workload the median ops/s of each
# mode, the median of the per-round ratios (scraped ÷ off) and their spread.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ROUNDS=3
DURATION=10
WARMUP=1
CLIENTS=64
CONNECTIONS=8
WORKLOADS="put,get"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 64 ;;
    esac
done

cargo build --release -q -p nacre
NACRE="${CARGO_TARGET_DIR:-$ROOT/target}/release/nacre"
WORK="$(mktemp -d "$ROOT/target/metrics-overhead.XXXXXX")"
PIDS=()
stop() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop; rm -rf "$WORK"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# run MODE WORKLOAD ROUND: one node, one measurement, one JSON line.
run() {
    local mode="$1" workload="$2" round="$3"
    local dir="$WORK/$mode-$workload-$round"
    mkdir -p "$dir"
    local client admin
    client="127.0.0.1:$(free_port)"
    admin="127.0.0.1:$(free_port)"
    local flags=(--admin-listen "$admin")
    [ "$mode" = off ] && flags=(--no-admin)
    "$NACRE" serve --data-dir "$dir/data" --listen "$client" \
        --peer-listen "127.0.0.1:$(free_port)" --no-etcd-api "${flags[@]}" \
        > "$dir/node.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 100); do
        "$NACRE" --endpoints "$client" set metrics-overhead-ready 1 > /dev/null 2>&1 && break
        sleep 0.1
    done
    if [ "$mode" = scraped ]; then
        # A scraper as Prometheus is one: a GET of /metrics every second.
        ( while true; do
              curl -sf "http://$admin/metrics" -o /dev/null || echo "scrape failed" >&2
              sleep 1
          done ) &
        PIDS+=("$!")
    fi
    "$NACRE" bench --endpoints "$client" --workload "$workload" --clients "$CLIENTS" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json \
        | python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); \
print(json.dumps({'mode': '$mode', 'workload': '$workload', 'round': $round, \
'ops_per_s': r['ops_per_s'], 'p99_us': r['latency_us']['p99'], 'errors': r['errors']}))"
    stop
}

RESULTS="$WORK/results.jsonl"
MODES=(scraped off)
for round in $(seq "$ROUNDS"); do
    for workload in ${WORKLOADS//,/ }; do
        for i in 0 1; do
            mode="${MODES[$(( (i + round) % 2 ))]}"
            run "$mode" "$workload" "$round" | tee -a "$RESULTS"
        done
    done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault((r["workload"], r["round"]), {})[r["mode"]] = r
print("\n| workload | scraped ops/s (median) | off ops/s (median) | ratio per round | median ratio |")
print("|---|---:|---:|---|---:|")
for w in dict.fromkeys(k[0] for k in by):
    rounds = [v for (wl, _), v in sorted(by.items()) if wl == w]
    on = statistics.median(r["scraped"]["ops_per_s"] for r in rounds)
    off = statistics.median(r["off"]["ops_per_s"] for r in rounds)
    ratios = [r["scraped"]["ops_per_s"] / r["off"]["ops_per_s"] for r in rounds]
    spread = ", ".join(f"{x:.3f}" for x in ratios)
    print(f"| {w} | {on:,.0f} | {off:,.0f} | {spread} | {statistics.median(ratios):.3f} |")
EOF
