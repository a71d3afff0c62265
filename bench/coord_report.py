#!/usr/bin/env python3
"""Tables from `nacre-coord-bench` output (one JSON object per line).

    coord_report.py RESULTS.jsonl [--doc docs/benchmarks.md] [--meta TEXT]

Replaces (or appends) the section between `<!-- compare-etcd-coord:begin -->`
and `<!-- compare-etcd-coord:end -->` in the doc; without --doc it prints it.
"""
import argparse
import json
import re
import sys

BEGIN = "<!-- compare-etcd-coord:begin -->"
END = "<!-- compare-etcd-coord:end -->"


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if r["bench"] == "fanout":
                    key = (r["watchers"], r["rate_per_s"])
                else:
                    key = r["contenders" if r["bench"] == "lock" else "watchers"]
                runs[(r["bench"], key, r["target"])] = r
    return runs


def n(x):
    return "–" if x is None else f"{x:,.0f}"


def ms(us):
    return f"{us / 1000:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r[p]
    return r


def fanout(runs):
    ws = sorted({k[1] for k in runs if k[0] == "fanout"}, key=lambda wr: (wr[1], wr[0]))
    if not ws:
        return []
    out = [
        "#### Watch fan-out",
        "",
        "| watchers | puts/s | Nacre events/s | etcd events/s | **Nacre ÷ etcd** | delivered Nacre / etcd | Nacre p50 / p99 ms | etcd p50 / p99 ms | p99 Nacre ÷ etcd | goal: ≥ 2× events/s, p99 ≤ etcd | put ack p50 / p99 ms Nacre; etcd |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for w in ws:
        a, e = runs.get(("fanout", w, "nacre")), runs.get(("fanout", w, "etcd"))
        w, rate = w

        def lat(r):
            return "–" if r is None else f"{ms(r['latency']['p50_us'])} / {ms(r['latency']['p99_us'])}"

        def put(r):
            return "–" if r is None else f"{ms(r['put_latency']['p50_us'])} / {ms(r['put_latency']['p99_us'])}"

        def deliv(r):
            return "–" if r is None else f"{100 * r['events'] / max(r['events_expected'], 1):.1f}%"

        if a and e:
            ok = a["events_per_s"] >= 2 * e["events_per_s"] and a["latency"]["p99_us"] <= e["latency"]["p99_us"]
            goal = "met" if ok else "**missed**"
        else:
            goal = "not run"
        out.append(
            f"| {w:,} | {rate} | {n(get(a, 'events_per_s'))} | {n(get(e, 'events_per_s'))} | "
            f"**{ratio(get(a, 'events_per_s'), get(e, 'events_per_s'))}** | {deliv(a)} / {deliv(e)} | "
            f"{lat(a)} | {lat(e)} | {ratio(get(a, 'latency', 'p99_us'), get(e, 'latency', 'p99_us'))} | {goal} | {put(a)}; {put(e)} |"
        )
    out += [
        "",
        "Events/s: events received by all watchers while the writer ran, per second of it; "
        "delivered: events received by the end of the drain (5 s after the last put) over "
        "acknowledged puts × watchers. Latency: put sent → event received, one clock; "
        "put ack: put sent → acknowledged (the commit, fsync included, that every event waits for).",
        "",
    ]
    return out


def idle(runs):
    keys = [k for k in runs if k[0] == "idle"]
    if not keys:
        return []
    w = keys[0][1]
    a, e = runs.get(("idle", w, "nacre")), runs.get(("idle", w, "etcd"))
    r0 = a or e
    mb = lambda kb: None if kb is None else kb / 1024
    rows = [
        ("RSS idle, MiB", lambda r: mb(r["rss_kb"][0]), "{:.1f}"),
        (f"RSS with {r0['watchers']:,} idle watchers, MiB", lambda r: mb(r["rss_kb"][1]), "{:.1f}"),
        (f"RSS with the watchers and {r0['leases']:,} leases, MiB", lambda r: mb(r["rss_kb"][2]), "{:.1f}"),
        ("**bytes per watcher**", lambda r: r["bytes_per_watcher"], "{:,.0f}"),
        ("**bytes per lease**", lambda r: r["bytes_per_lease"], "{:,.0f}"),
        ("CPU idle, % of a core", lambda r: 100 * r["cpu_per_s"][0], "{:.2f}"),
        ("CPU with the watchers, % of a core", lambda r: 100 * r["cpu_per_s"][1], "{:.2f}"),
        ("CPU with watchers and kept-alive leases, % of a core", lambda r: 100 * r["cpu_per_s"][2], "{:.2f}"),
        ("**CPU µs/s per watcher**", lambda r: r["cpu_us_per_s_per_watcher"], "{:.3f}"),
        ("**CPU µs/s per lease**", lambda r: r["cpu_us_per_s_per_lease"], "{:.3f}"),
        ("time to start the watchers, s", lambda r: r["setup_watchers_s"], "{:.2f}"),
        ("time to grant the leases, s", lambda r: r["setup_leases_s"], "{:.2f}"),
    ]
    out = [
        f"#### {r0['watchers']:,} idle watchers and {r0['leases']:,} kept-alive leases on one node",
        "",
        "| server | Nacre | etcd | Nacre ÷ etcd |",
        "|---|---:|---:|---:|",
    ]
    for name, f, fmt in rows:
        x = None if a is None else f(a)
        y = None if e is None else f(e)
        fx = "–" if x is None else fmt.format(x)
        fy = "–" if y is None else fmt.format(y)
        out.append(f"| {name} | {fx} | {fy} | {ratio(x, y) if (x or 0) > 0 and (y or 0) > 0 else '–'} |")
    out += [
        "",
        f"RSS: VmRSS of /proc/<pid>/status, {r0['settle_s']:.0f} s after each step; "
        f"CPU: utime + stime of /proc/<pid>/stat over {r0['interval_s']:.0f} s after each step. "
        f"Leases: {r0['lease_ttl_s']} s time to live, renewed every third of it "
        "(etcd: one LeaseKeepAlive stream, a request per lease, as clientv3; Nacre: one LeaseKeeper, "
        "one keep-alive request for all). Watchers: one key each (etcd: all on one Watch stream, as "
        "clientv3; Nacre: a client connection per 1,000, the server's default "
        "watches_per_connection_max). Each workload runs on freshly started servers. Per-watcher and per-lease figures are the "
        "differences between steps divided by the count.",
        "",
    ]
    return out


def lock(runs):
    cs = sorted({k[1] for k in runs if k[0] == "lock"})
    if not cs:
        return []
    out = [
        "#### Lock acquire/release cycles",
        "",
        "| contenders | Nacre cycles/s | etcd cycles/s | **Nacre ÷ etcd** | Nacre acquire p50 / p99 ms | etcd acquire p50 / p99 ms | errors Nacre / etcd | overlaps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cs:
        a, e = runs.get(("lock", c, "nacre")), runs.get(("lock", c, "etcd"))

        def lat(r):
            return "–" if r is None else f"{ms(r['acquire']['p50_us'])} / {ms(r['acquire']['p99_us'])}"

        errs = f"{n(get(a, 'errors'))} / {n(get(e, 'errors'))}"
        ov = sum(r["overlaps"] for r in (a, e) if r)
        out.append(
            f"| {c} | {n(get(a, 'cycles_per_s'))} | {n(get(e, 'cycles_per_s'))} | "
            f"**{ratio(get(a, 'cycles_per_s'), get(e, 'cycles_per_s'))}** | {lat(a)} | {lat(e)} | {errs} | {ov} |"
        )
    firsts = [f"{r['target']} ×{r['contenders']}: {r['first_error']}" for r in runs.values()
              if r["bench"] == "lock" and r.get("first_error")]
    out += [
        "",
        "A cycle: lease grant, create `name/<lease>` with the lease, read the prefix, wait (watch) "
        "for the older keys to go, then delete the key and revoke the lease. etcd: "
        "`concurrency.Mutex`'s recipe over gRPC (a transaction that creates the key and reads the "
        "oldest, then waits for the predecessor's delete), its session lease (10 s) not kept alive, "
        "as no cycle comes near it; Nacre: `Client::lock` (which keeps its lease alive in the "
        "background) and `LockGuard::unlock`. All contenders of a system share one connection. Overlaps: times two contenders held the lock at once (must be 0).",
        "",
    ]
    if firsts:
        out += ["First errors: " + "; ".join(firsts), ""]
    return out


def section(runs, meta):
    has_nacre = any(k[2] == "nacre" for k in runs)
    out = [
        BEGIN,
        "",
        f"_Generated by bench/compare-etcd-coord.sh: {meta}._",
        "",
        "One etcd member and one Nacre node on loopback, each fsyncing before it acknowledges "
        "a write (etcd its WAL, Nacre its tlog); one nacre-coord-bench process drives both, "
        "alternating which goes first, so writer and watchers share one clock. Raw results: "
        "`bench/results/compare-etcd-coord.jsonl`.",
        "",
    ]
    if not has_nacre:
        out += ["**The Nacre side was not run in this run**: only etcd's figures are here.", ""]
    out += fanout(runs) + idle(runs) + lock(runs)
    out.append(END)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--doc")
    ap.add_argument("--meta", default="")
    a = ap.parse_args()
    text = section(load(a.results), a.meta)
    if not a.doc:
        sys.stdout.write(text)
        return
    with open(a.doc) as f:
        doc = f.read()
    pat = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", re.S)
    if pat.search(doc):
        doc = pat.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n### Coordination: watches, leases, locks (against etcd)\n\n" + text
    with open(a.doc, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
