#!/usr/bin/env bash
# Nacre through its etcd v3 API against etcd, through the same gRPC client
# (nacre-etcd-bench's etcd target), so the client's cost is equal; and
# Nacre's native protocol on the same cluster beside it, for the cost of
# the gRPC layer. Then watch fan-out through the etcd API on both
# (nacre-coord-bench's etcd target). Prints a markdown table of the
# medians and their ratios, and keeps the raw lines in bench/results/.
#
#   bench/compare-etcd-api.sh [--nodes 1|3] [--duration S] [--warmup S]
#       [--clients 1,16,64,256] [--workloads put,get,get-any,sequence]
#       [--rounds N] [--keys N] [--no-fanout]
#
# Installs etcd from Debian if it is missing, builds in release mode,
# starts an etcd cluster and a Nacre cluster of --nodes nodes on loopback
# (data under BENCH_DATA_DIR or the repository), and stops them on exit.
# Each round runs every system once per workload and client count, in an
# order that rotates; the table quotes the median of the rounds and the
# spread (min-max) of the ratio.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

NODES=1
DURATION=5
WARMUP=1
CLIENTS=1,16,64,256
WORKLOADS=put,get,get-any,sequence
ROUNDS=3
KEYS=10000
FANOUT=1
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --keys) KEYS="$2"; shift 2 ;;
        --no-fanout) FANOUT=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 64 ;;
    esac
done
case "$NODES" in 1|3) ;; *) echo "--nodes must be 1 or 3" >&2; exit 64 ;; esac

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
PY=/usr/bin/python3
cargo build --release -q -p nacre -p nacre-etcd-bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NACRE="$BIN/nacre"

DATA="$(mktemp -d "${BENCH_DATA_DIR:-$ROOT}/.bench-data.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- etcd ----
ETCD_EPS=()
initial=""
declare -a epeer
for i in $(seq 1 "$NODES"); do
    ETCD_EPS+=("127.0.0.1:$(free_port)")
    epeer[$i]="127.0.0.1:$(free_port)"
    initial+="${initial:+,}e$i=http://${epeer[$i]}"
done
for i in $(seq 1 "$NODES"); do
    c="${ETCD_EPS[$((i-1))]}"
    etcd --name "e$i" --data-dir "$DATA/etcd/e$i" \
        --listen-client-urls "http://$c" --advertise-client-urls "http://$c" \
        --listen-peer-urls "http://${epeer[$i]}" --initial-advertise-peer-urls "http://${epeer[$i]}" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --quota-backend-bytes $((8 << 30)) --log-level warn >>"$DATA/etcd-e$i.log" 2>&1 &
    PIDS+=($!)
done

# ---- nacre: init-config gives each member a client and an etcd address ----
"$NACRE" cluster init-config --nodes "$NODES" --dir "$DATA/nacre" >"$DATA/nacre.toml"
mapfile -t NACRE_EPS < <(sed -n 's/^client = "\(.*\)"$/\1/p' "$DATA/nacre.toml")
mapfile -t NACRE_ETCD_EPS < <(sed -n 's/^etcd = "\(.*\)"$/\1/p' "$DATA/nacre.toml")
for n in $(seq 1 "$NODES"); do
    "$NACRE" serve --config "$DATA/nacre.toml" --node "n$n" >>"$DATA/nacre-n$n.log" 2>&1 &
    PIDS+=($!)
done

# The leader's endpoint of each: both clients then go to the leader, as
# Nacre's own client does.
leader_of() {
    ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint status -w json 2>/dev/null |
        $PY -c 'import json,sys
for s in json.load(sys.stdin):
    st = s["Status"]
    if st["leader"] == st["header"]["member_id"]:
        print(s["Endpoint"].replace("http://", "")); break'
}
etcd_all="$(IFS=,; echo "${ETCD_EPS[*]}")"
nacre_etcd_all="$(IFS=,; echo "${NACRE_ETCD_EPS[*]}")"
etcd_leader=""; nacre_etcd_leader=""
for _ in $(seq 1 120); do
    etcd_leader="$(leader_of "$etcd_all" || true)"
    nacre_etcd_leader="$(leader_of "$nacre_etcd_all" || true)"
    [ -n "$etcd_leader" ] && [ -n "$nacre_etcd_leader" ] && break
    sleep 0.5
done
if [ -z "$etcd_leader" ] || [ -z "$nacre_etcd_leader" ]; then
    echo "the clusters did not come up; logs:" >&2
    tail -n 20 "$DATA"/*.log >&2
    exit 1
fi
# The native endpoint of the same member as Nacre's etcd leader.
for i in "${!NACRE_ETCD_EPS[@]}"; do
    [ "${NACRE_ETCD_EPS[$i]}" = "$nacre_etcd_leader" ] && nacre_leader="${NACRE_EPS[$i]}"
done

RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
OUT="$RESULTS/compare-etcd-api-${NODES}node.jsonl"
: >"$OUT"
echo "load $(cut -d' ' -f1-3 /proc/loadavg); etcd $etcd_leader, nacre $nacre_leader (etcd API $nacre_etcd_leader)" >&2
BENCH=("$BIN/nacre-etcd-bench" --etcd "$etcd_leader" --nacre "$nacre_leader"
    --nacre-etcd "$nacre_etcd_leader" --keys "$KEYS")
"${BENCH[@]}" --workloads "${WORKLOADS%%,*}" --preload-only --json
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    "${BENCH[@]}" --workloads "$WORKLOADS" --clients "$CLIENTS" --duration "$DURATION" \
        --warmup "$WARMUP" --no-preload --json |
        $PY -c 'import json,sys
for line in sys.stdin:
    v = json.loads(line); v["round"] = int(sys.argv[1]); print(json.dumps(v))' "$r" >>"$OUT"
done

FAN="$RESULTS/compare-etcd-api-${NODES}node-fanout.jsonl"
: >"$FAN"
if [ "$FANOUT" = 1 ]; then
    for r in $(seq 1 "$ROUNDS"); do
        for target in etcd nacre-etcd; do
            ep="$etcd_leader"; [ "$target" = nacre-etcd ] && ep="$nacre_etcd_leader"
            "$BIN/nacre-coord-bench" --etcd "$ep" --workloads fanout --watchers 100 \
                --rate 500,2000 --duration "$DURATION" --drain 3 |
                $PY -c 'import json,sys
for line in sys.stdin:
    v = json.loads(line); v["system"] = sys.argv[1]; v["round"] = int(sys.argv[2]); print(json.dumps(v))' \
                "$target" "$r" >>"$FAN"
        done
    done
fi

echo "results: $OUT $FAN" >&2
$PY "$ROOT/bench/etcd_api_report.py" "$OUT" "$FAN" --nodes "$NODES" \
    --meta "$(date -u +%F) at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(etcd --version | head -1); ${DURATION} s per run after ${WARMUP} s warm-up; $ROUNDS rounds; $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
