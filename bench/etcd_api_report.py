#!/usr/bin/env python3
"""Tables of bench/compare-etcd-api.sh's results, in markdown on stdout.

For each workload and client count: the median ops/s and p99 of etcd,
Nacre through its etcd API (nacre-etcd) and Nacre's native protocol over
the rounds, the ratio nacre-etcd / etcd (median, and min-max over the
rounds) and nacre-etcd / native (the cost of the gRPC layer). Then the
watch fan-out runs: events delivered per second through each etcd API.
"""

import argparse
import json
import statistics
from collections import defaultdict


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def kv_table(rows, nodes):
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        key = (r["bench"], r["clients"])
        by[key][r["target"]][r.get("round", 1)] = r
    out = [
        f"#### {nodes} node{'s' if nodes > 1 else ''}: KV through the same gRPC client",
        "",
        "| workload | clients | etcd ops/s | nacre-etcd ops/s | native ops/s | nacre-etcd ÷ etcd (spread) | p99 etcd / nacre-etcd ms | nacre-etcd ÷ native |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (bench, clients), t in sorted(by.items(), key=lambda x: (x[0][0], x[0][1])):
        e, g, n = t.get("etcd", {}), t.get("nacre-etcd", {}), t.get("nacre", {})
        rounds = sorted(set(e) & set(g))
        ratios = [g[k]["ops_per_s"] / e[k]["ops_per_s"] for k in rounds if e[k]["ops_per_s"] > 0]
        med = lambda d, f: statistics.median(f(v) for v in d.values()) if d else float("nan")
        ops = lambda v: v["ops_per_s"]
        p99 = lambda v: v["latency_us"]["p99"] / 1000
        native = med(n, ops)
        grpc = med(g, ops)
        spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "-"
        ratio = f"**{statistics.median(ratios):.2f}×** ({spread})" if ratios else "-"
        out.append(
            f"| {bench} | {clients} | {med(e, ops):,.0f} | {grpc:,.0f} | {native:,.0f} | {ratio} "
            f"| {med(e, p99):.2f} / {med(g, p99):.2f} | {grpc / native:.2f}× |"
        )
    return out


def fanout_table(rows):
    if not rows:
        return []
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[(r["watchers"], r["rate_per_s"])][r["system"]].append(r)
    out = [
        "",
        "#### Watch fan-out through the etcd API (nacre-coord-bench's etcd client on both)",
        "",
        "| watchers | puts/s | etcd events/s | nacre-etcd events/s | ratio | p99 event latency etcd / nacre-etcd ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for (w, rate), s in sorted(by.items()):
        e = statistics.median(r["events_per_s"] for r in s.get("etcd", [])) if s.get("etcd") else 0
        g = statistics.median(r["events_per_s"] for r in s.get("nacre-etcd", [])) if s.get("nacre-etcd") else 0
        lat = lambda sys_: statistics.median(r["latency"]["p99_us"] for r in s.get(sys_, [])) / 1000 if s.get(sys_) else float("nan")
        ratio = f"{g / e:.2f}×" if e else "-"
        out.append(f"| {w} | {rate} | {e:,.0f} | {g:,.0f} | {ratio} | {lat('etcd'):.1f} / {lat('nacre-etcd'):.1f} |")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kv")
    p.add_argument("fanout")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--meta", default="")
    a = p.parse_args()
    lines = kv_table(load(a.kv), a.nodes)
    try:
        lines += fanout_table(load(a.fanout))
    except FileNotFoundError:
        pass
    if a.meta:
        lines += ["", f"_{a.meta}_"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
