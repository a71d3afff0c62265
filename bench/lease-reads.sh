#!/usr/bin/env bash
# Consistent reads on a 3-node local cluster: the leader lease against
# read-index rounds (every batch of reads confirmed by a quorum), and, with
# --old, against another build's lease; configurations interleaved round by
# round so that the machine's drift falls on all of them.
#
#   bench/lease-reads.sh [--rounds 3] [--duration 6] [--warmup 1]
#       [--clients 64] [--connections 8] [--old PATH_TO_OLD_NACRE]
#
# Builds nacre in release mode, and for each round and configuration starts
# a fresh cluster (data under a temporary directory on the repository's
# disk), runs `nacre bench --workload get` against all three nodes, stops
# the cluster. Prints one line per run and the medians with their ratios.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ROUNDS=3
DURATION=6
WARMUP=1
CLIENTS=64
CONNECTIONS=8
OLD=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --old) OLD="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 64 ;;
    esac
done

cargo build --release -q -p nacre
NEW="${CARGO_TARGET_DIR:-$ROOT/target}/release/nacre"
WORK="$(mktemp -d "$ROOT/target/lease-reads.XXXXXX")"
PIDS=()
stop() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop; rm -rf "$WORK"' EXIT

# run NAME BINARY MODE ROUND: one cluster, one measurement, one JSON line.
run() {
    local name="$1" bin="$2" mode="$3" round="$4"
    local dir="$WORK/$name-$round"
    mkdir -p "$dir"
    { echo "consistent_reads = \"$mode\""; "$NEW" cluster init-config --nodes 3 --dir "$dir"; } > "$dir/cluster.toml"
    local endpoints
    endpoints="$(grep '^client' "$dir/cluster.toml" | sed 's/.*"\(.*\)"/\1/' | paste -sd,)"
    for n in n1 n2 n3; do
        "$bin" serve --config "$dir/cluster.toml" --node "$n" > "$dir/$n.log" 2>&1 &
        PIDS+=("$!")
    done
    for _ in $(seq 100); do
        "$NEW" --endpoints "$endpoints" set lease-reads-ready 1 > /dev/null 2>&1 && break
        sleep 0.1
    done
    "$NEW" bench --endpoints "$endpoints" --workload get --clients "$CLIENTS" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json \
        | python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); \
print(json.dumps({'config': '$name', 'round': $round, 'ops_per_s': r['ops_per_s'], \
'p50_us': r['latency_us']['p50'], 'p99_us': r['latency_us']['p99'], 'errors': r['errors']}))"
    stop
}

CONFIGS=("lease $NEW lease" "read-index $NEW read-index")
[ -n "$OLD" ] && CONFIGS+=("old-lease $OLD lease")
RESULTS="$WORK/results.jsonl"
for round in $(seq "$ROUNDS"); do
    n=${#CONFIGS[@]}
    for i in $(seq 0 $((n - 1))); do
        # Rotate the starting configuration each round.
        read -r name bin mode <<< "${CONFIGS[$(( (i + round) % n ))]}"
        run "$name" "$bin" "$mode" "$round" | tee -a "$RESULTS"
    done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault(r["config"], []).append(r)
med = {c: (statistics.median(x["ops_per_s"] for x in rs), statistics.median(x["p99_us"] for x in rs))
       for c, rs in by.items()}
print("\n| configuration | reads/s (median) | p99 µs (median) | reads/s ÷ lease | p99 ÷ lease |")
print("|---|---:|---:|---:|---:|")
base = med["lease"]
for c, (ops, p99) in med.items():
    print(f"| {c} | {ops:,.0f} | {p99:,.0f} | {ops / base[0]:.2f} | {p99 / base[1]:.2f} |")
EOF
