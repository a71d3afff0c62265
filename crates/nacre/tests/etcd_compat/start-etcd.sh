#!/usr/bin/env bash
# start-etcd.sh N BASEPORT DIR: starts a real N-member etcd cluster on
# loopback, the reference the compatibility tests are validated against
# (and the other side of a differential test). Member i (0-based) serves
# clients on BASEPORT+2i and peers on BASEPORT+2i+1; its data and log are
# DIR/mI and DIR/mI.log. The members run in the background: their pids are
# in DIR/pids (stop them with `kill $(cat DIR/pids)`), the clients'
# endpoints, comma-separated, in DIR/endpoints and on stdout. Returns once
# every member answers `etcdctl endpoint health`.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 N BASEPORT DIR" >&2
    exit 2
fi
n=$1 base=$2 dir=$3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
: >"$dir/pids"

cluster="" endpoints=""
for ((i = 0; i < n; i++)); do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"
    endpoints+="${endpoints:+,}127.0.0.1:$((base + 2 * i))"
done

for ((i = 0; i < n; i++)); do
    client="http://127.0.0.1:$((base + 2 * i))"
    peer="http://127.0.0.1:$((base + 2 * i + 1))"
    # setsid: the members outlive this script and ignore its terminal's
    # signals; the cluster token keeps two test clusters from mixing.
    setsid etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "compat-$base" \
        >"$dir/m$i.log" 2>&1 </dev/null &
    echo $! >>"$dir/pids"
done
echo "$endpoints" >"$dir/endpoints"

# Up once a write through every member commits (a leader exists).
for _ in $(seq 1 150); do
    if ETCDCTL_API=3 etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1; then
        echo "$endpoints"
        exit 0
    fi
    sleep 0.2
done
echo "etcd did not become healthy within 30 s; logs in $dir" >&2
exit 1
