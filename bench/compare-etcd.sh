#!/usr/bin/env bash
# Nacre against etcd on this machine, in one run, with the same workloads
# (nacre-etcd-bench, built on nacre-loadgen), then tables and plots into
# docs/benchmarks.md and docs/img/.
#
#   bench/compare-etcd.sh [--nodes 1|3] [--duration S] [--warmup S]
#       [--clients 1,16,64,256] [--workloads put,get,get-any,mixed,sequence]
#       [--keys N] [--value-size B] [--no-doc]
#
# Installs what it needs (Debian: etcd-server, etcd-client,
# python3-matplotlib), builds nacre and nacre-etcd-bench in release mode,
# starts an etcd cluster and a Nacre cluster of --nodes nodes on loopback
# with their data in one directory on the repository's disk (BENCH_DATA_DIR
# overrides the parent directory), and stops everything it started on exit.
# Both systems fsync before they acknowledge a write: etcd its WAL, Nacre
# its tlog.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

NODES=1
DURATION=10
WARMUP=1
CLIENTS=1,16,64,256
WORKLOADS=put,get,get-any,mixed,sequence
KEYS=10000
VALUE_SIZE=256
WRITE_DOC=1
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --keys) KEYS="$2"; shift 2 ;;
        --value-size) VALUE_SIZE="$2"; shift 2 ;;
        --no-doc) WRITE_DOC=0; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 64 ;;
    esac
done
case "$NODES" in 1|3) ;; *) echo "--nodes must be 1 or 3" >&2; exit 64 ;; esac

# ---- what it needs ----
need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1 || need_pkgs+=(python3-matplotlib)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]} ..." >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
PY=/usr/bin/python3

echo "building ..." >&2
cargo build --release -q -p nacre -p nacre-etcd-bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NACRE="$BIN/nacre"

# ---- start both clusters ----
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

ETCD_CLIENTS=()
initial=""
declare -a epeer
for i in $(seq 1 "$NODES"); do
    ETCD_CLIENTS+=("127.0.0.1:$(free_port)")
    epeer[$i]="127.0.0.1:$(free_port)"
    initial+="${initial:+,}e$i=http://${epeer[$i]}"
done
NACRE_CLIENTS=()
if [ "$NODES" = 1 ]; then
    NACRE_CLIENTS=("127.0.0.1:$(free_port)")
else
    if ! "$NACRE" cluster --help >/dev/null 2>&1; then
        echo "this nacre has no cluster commands: run with --nodes 1" >&2
        exit 1
    fi
    "$NACRE" cluster init-config --nodes 3 --dir "$DATA/nacre" >"$DATA/nacre.toml"
    mapfile -t NACRE_CLIENTS < <(sed -n 's/^client = "\(.*\)"$/\1/p' "$DATA/nacre.toml")
fi
etcd_eps="$(IFS=,; echo "${ETCD_CLIENTS[*]}")"
nacre_eps="$(IFS=,; echo "${NACRE_CLIENTS[*]}")"

# Starts both clusters (on the data they already have, if any) and waits
# until both answer; sets etcd_leader.
start_all() {
    for i in $(seq 1 "$NODES"); do
        c="${ETCD_CLIENTS[$((i-1))]}"
        etcd --name "e$i" --data-dir "$DATA/etcd/e$i" \
            --listen-client-urls "http://$c" --advertise-client-urls "http://$c" \
            --listen-peer-urls "http://${epeer[$i]}" --initial-advertise-peer-urls "http://${epeer[$i]}" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --quota-backend-bytes $((8 << 30)) --log-level warn \
            >>"$DATA/etcd-e$i.log" 2>&1 &
        PIDS+=($!)
    done
    if [ "$NODES" = 1 ]; then
        # The etcd API is measured by compare-etcd-api.sh; off here, it
        # cannot clash with anything on its default port.
        "$NACRE" serve --data-dir "$DATA/nacre/n1" --listen "${NACRE_CLIENTS[0]}" --no-etcd-api \
            >>"$DATA/nacre-n1.log" 2>&1 &
        PIDS+=($!)
    else
        for n in 1 2 3; do
            "$NACRE" serve --config "$DATA/nacre.toml" --node "n$n" >>"$DATA/nacre-n$n.log" 2>&1 &
            PIDS+=($!)
        done
    fi
    local ready=""
    for _ in $(seq 1 120); do
        if ETCDCTL_API=3 etcdctl --endpoints="$etcd_eps" endpoint health >/dev/null 2>&1 &&
            "$NACRE" --endpoints "$nacre_eps" nop >/dev/null 2>&1; then
            ready=1; break
        fi
        sleep 0.5
    done
    if [ -z "$ready" ]; then
        echo "the clusters did not come up; logs:" >&2
        tail -n 20 "$DATA"/*.log >&2
        exit 1
    fi
    # etcd's clients spread requests over every endpoint and followers
    # forward writes; give it its leader only, as Nacre's client goes to
    # the leader.
    etcd_leader="$(ETCDCTL_API=3 etcdctl --endpoints="$etcd_eps" endpoint status -w json |
        $PY -c 'import json,sys
for s in json.load(sys.stdin):
    st = s["Status"]
    if st["leader"] == st["header"]["member_id"]:
        print(s["Endpoint"].replace("http://", "")); break')"
}

# Stops both clusters (SIGTERM), keeping their data; adds up the CPU
# seconds they used.
stop_all() {
    for p in "${PIDS[@]}"; do
        awk -v p="$p" '{ printf "%s %.2f\n", p, ($14 + $15) / 100 }' "/proc/$p/stat" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done >>"$DATA/cpu"
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

# ---- run ----
# The keys are written once; then, for each workload, both clusters are
# restarted on their data so that every workload starts from the same
# state (etcd 3.4 serves reads noticeably slower right after a bulk load
# or a write-heavy run, see docs/benchmarks.md).
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
OUT="$RESULTS/compare-etcd-${NODES}node.jsonl"
: >"$OUT"
BENCH=("$BIN/nacre-etcd-bench" --nacre "$nacre_eps" --keys "$KEYS" --value-size "$VALUE_SIZE")
echo "starting etcd ($etcd_eps) and nacre ($nacre_eps) ..." >&2
start_all
"${BENCH[@]}" --etcd "${etcd_leader:-$etcd_eps}" --workloads "${WORKLOADS%%,*}" --preload-only --json
IFS=, read -r -a wls <<<"$WORKLOADS"
for w in "${wls[@]}"; do
    stop_all
    start_all
    echo "== $w (etcd leader $etcd_leader)" >&2
    "${BENCH[@]}" --etcd "${etcd_leader:-$etcd_eps}" --workloads "$w" --clients "$CLIENTS" \
        --duration "$DURATION" --warmup "$WARMUP" --no-preload --json >>"$OUT"
done
stop_all
echo "results: $OUT" >&2
# Server CPU seconds (user + system), per process start, over the runs.
cp "$DATA/cpu" "$RESULTS/compare-etcd-${NODES}node.cpu"

if [ "$WRITE_DOC" = 1 ]; then
    meta="$(date -u +%F) at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(etcd --version | head -1); Nacre $("$NACRE" --version | awk '{print $2}'); ${DURATION} s measured after ${WARMUP} s warm-up per run; $KEYS keys of 16 bytes, ${VALUE_SIZE}-byte values"
    $PY "$ROOT/bench/report.py" "$OUT" --nodes "$NODES" --doc "$ROOT/docs/benchmarks.md" \
        --img "$ROOT/docs/img" --meta "$meta"
fi
