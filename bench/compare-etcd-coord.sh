#!/usr/bin/env bash
# Nacre's coordination features against etcd's on this machine, in one run
# (nacre-coord-bench): watch fan-out, idle watchers and kept-alive leases,
# lock cycles. Writes the tables into docs/benchmarks.md between
# `<!-- compare-etcd-coord:begin -->` and `<!-- compare-etcd-coord:end -->`.
#
#   bench/compare-etcd-coord.sh [--workloads fanout,idle,lock] [--duration S]
#       [--rate 500,2000] [--watchers 1,100,1000] [--contenders 1,16,64]
#       [--idle N] [--etcd-only] [--no-doc] [--no-build]
#
# Installs etcd (Debian: etcd-server, etcd-client) if needed, builds nacre
# and nacre-coord-bench in release mode, starts one etcd member and one
# Nacre node on loopback with their data on the repository's disk
# (BENCH_DATA_DIR overrides the parent directory), both fsyncing before
# they acknowledge a write, and stops them on exit. --etcd-only runs etcd
# alone; --no-build uses the binaries in target/release as they are.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

WORKLOADS=fanout,idle,lock
DURATION=10
RATE=500,2000
WATCHERS=1,100,1000
CONTENDERS=1,16,64
IDLE=10000
ETCD_ONLY=0
WRITE_DOC=1
BUILD=1
ARGV=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --watchers) WATCHERS="$2"; shift 2 ;;
        --contenders) CONTENDERS="$2"; shift 2 ;;
        --idle) IDLE="$2"; shift 2 ;;
        --etcd-only) ETCD_ONLY=1; shift ;;
        --no-doc) WRITE_DOC=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 64 ;;
    esac
done

need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]} ..." >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
PY=/usr/bin/python3

if [ "$BUILD" = 1 ]; then
    echo "building ..." >&2
    cargo build --release -q -p nacre -p nacre-etcd-bench
fi
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

ETCD_EP="127.0.0.1:$(free_port)"
ETCD_PEER="127.0.0.1:$(free_port)"
NACRE_EP="127.0.0.1:$(free_port)"

# Starts etcd (the same flags as bench/compare-etcd.sh's one-node runs)
# and Nacre on fresh data in $DATA/$1, waits until both answer; sets
# ETCD_PID and NACRE_PID.
start_servers() {
    etcd --name e1 --data-dir "$DATA/$1/etcd" \
        --listen-client-urls "http://$ETCD_EP" --advertise-client-urls "http://$ETCD_EP" \
        --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
        --initial-cluster "e1=http://$ETCD_PEER" --initial-cluster-state new \
        --quota-backend-bytes $((8 << 30)) --log-level warn \
        >>"$DATA/etcd.log" 2>&1 &
    ETCD_PID=$!
    PIDS+=("$ETCD_PID")
    if [ "$ETCD_ONLY" = 0 ]; then
        "$NACRE" serve --data-dir "$DATA/$1/nacre" --listen "$NACRE_EP" --no-etcd-api >>"$DATA/nacre.log" 2>&1 &
        NACRE_PID=$!
        PIDS+=("$NACRE_PID")
    fi
    local ready=""
    for _ in $(seq 1 120); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_EP" endpoint health >/dev/null 2>&1 &&
            { [ "$ETCD_ONLY" = 1 ] || "$NACRE" --endpoints "$NACRE_EP" nop >/dev/null 2>&1; }; then
            ready=1; break
        fi
        sleep 0.5
    done
    if [ -z "$ready" ]; then
        echo "the servers did not come up; logs:" >&2
        tail -n 20 "$DATA"/*.log >&2
        exit 1
    fi
}

stop_servers() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
OUT="$RESULTS/compare-etcd-coord.jsonl"
: >"$OUT"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
AFTER=""
FAILED=""
# Each workload on freshly started servers, so that the idle workload's
# memory readings do not start from what a fan-out run left behind.
IFS=, read -r -a wls <<<"$WORKLOADS"
for w in "${wls[@]}"; do
    start_servers "$w"
    BENCH=("$BIN/nacre-coord-bench" --etcd "$ETCD_EP" --etcd-pid "$ETCD_PID")
    [ "$ETCD_ONLY" = 0 ] && BENCH+=(--nacre "$NACRE_EP" --nacre-pid "$NACRE_PID")
    BENCH+=(--workloads "$w" --duration "$DURATION" --rate "$RATE" --watchers "$WATCHERS"
        --contenders "$CONTENDERS" --idle-watchers "$IDLE" --idle-leases "$IDLE")
    echo "${BENCH[*]}" >&2
    "${BENCH[@]}" | tee -a "$OUT" || FAILED+="${FAILED:+, }$w"
    AFTER+="${AFTER:+, }after $w: etcd $(rss_mib "$ETCD_PID") MiB"
    [ "$ETCD_ONLY" = 0 ] && AFTER+=", Nacre $(rss_mib "$NACRE_PID") MiB"
    stop_servers
done
echo "results: $OUT" >&2

if [ "$WRITE_DOC" = 1 ]; then
    meta="$(date -u '+%F %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    meta+="; \`bench/compare-etcd-coord.sh ${ARGV[*]}\`"
    meta+="; $(etcd --version | head -1)"
    [ "$ETCD_ONLY" = 0 ] && meta+="; Nacre $("$NACRE" --version | awk '{print $2}')"
    [ -n "$FAILED" ] && meta+="; **runs failed in: $FAILED** (see the tables)"
    meta+="; server RSS at the end of each workload's servers ($AFTER)"
    meta+="; load average (1/5/15 min) $LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after"
    meta+="; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1) VM"
    $PY "$ROOT/bench/coord_report.py" "$OUT" --doc "$ROOT/docs/benchmarks.md" --meta "$meta"
fi
