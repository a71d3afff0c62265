#!/usr/bin/env python3
"""Tables and plots from `nacre-etcd-bench --json` output.

    report.py RESULTS.jsonl --nodes N [--doc docs/benchmarks.md] [--img docs/img] [--meta TEXT]

Writes docs/img/etcd-throughput-Nnode.png and docs/img/etcd-latency-Nnode.png
and replaces (or appends) the section between
`<!-- compare-etcd:Nnode:begin -->` and `<!-- compare-etcd:Nnode:end -->` in the doc.
Without --doc it prints the section.
"""
import argparse
import json
import os
import re
import sys

ORDER = ["put", "get", "get-any", "mixed", "sequence"]
TITLES = {
    "put": "put (1 key, fsync)",
    "get": "get, linearizable",
    "get-any": "get, Nacre any / etcd serializable",
    "mixed": "mixed: 50% linearizable get, 50% put",
    "sequence": "sequence / txn of 10 puts",
}


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            runs[(r["bench"], r["clients"], r["target"])] = r
    return runs


def fmt_n(x):
    return f"{x:,.0f}"


def ms(us):
    return f"{us / 1000:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "–"


def table(runs):
    benches = [b for b in ORDER if any(k[0] == b for k in runs)]
    clients = sorted({k[1] for k in runs})
    out = [
        "| workload | clients | Nacre ops/s | etcd ops/s | **Nacre ÷ etcd** | Nacre p50 / p99 / p99.9 ms | etcd p50 / p99 / p99.9 ms | p99 Nacre ÷ etcd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in benches:
        for c in clients:
            n = runs.get((b, c, "nacre"))
            e = runs.get((b, c, "etcd"))
            if not n and not e:
                continue
            def lat(r):
                if not r:
                    return "–"
                l = r["latency_us"]
                return f"{ms(l['p50'])} / {ms(l['p99'])} / {ms(l['p999'])}"
            out.append(
                "| {} | {} | {} | {} | **{}** | {} | {} | {} |".format(
                    b,
                    c,
                    fmt_n(n["ops_per_s"]) if n else "–",
                    fmt_n(e["ops_per_s"]) if e else "–",
                    ratio(n["ops_per_s"], e["ops_per_s"]) if n and e else "–",
                    lat(n),
                    lat(e),
                    ratio(n["latency_us"]["p99"], e["latency_us"]["p99"]) if n and e else "–",
                )
            )
    return "\n".join(out)


def plots(runs, nodes, img):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(img, exist_ok=True)
    benches = [b for b in ORDER if any(k[0] == b for k in runs)]
    clients = sorted({k[1] for k in runs})
    colors = {"nacre": "#1f77b4", "etcd": "#d62728"}

    fig, axes = plt.subplots(1, len(benches), figsize=(4 * len(benches), 3.6), squeeze=False)
    for ax, b in zip(axes[0], benches):
        for t in ("nacre", "etcd"):
            xs = [c for c in clients if (b, c, t) in runs]
            ys = [runs[(b, c, t)]["ops_per_s"] for c in xs]
            if xs:
                ax.plot(xs, ys, marker="o", label=t, color=colors[t])
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients)
        ax.set_xticklabels([str(c) for c in clients])
        ax.set_title(TITLES.get(b, b), fontsize=9)
        ax.set_xlabel("clients")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("operations / s")
    axes[0][0].legend()
    fig.suptitle(f"Throughput against clients, {nodes}-node Nacre vs {nodes}-node etcd")
    fig.tight_layout()
    tp = os.path.join(img, f"etcd-throughput-{nodes}node.png")
    fig.savefig(tp, dpi=110)
    plt.close(fig)

    # Latency distributions: percentile plots for put and get at the
    # clients counts that exist (1 and 64 by default).
    shown = [b for b in ("put", "get", "get-any", "mixed") if b in benches]
    cs = [c for c in (1, 64) if c in clients] or clients[:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.8), squeeze=False)
    for ax, b in zip(axes[0], shown):
        for t in ("nacre", "etcd"):
            for c, style in zip(cs, ("-", "--")):
                r = runs.get((b, c, t))
                if not r or not r.get("cdf"):
                    continue
                xs = [min(q, 0.99999) for _, q in r["cdf"]]
                ys = [v / 1000 for v, _ in r["cdf"]]
                # x axis: 1/(1-q), so that p50, p99, p99.9 are equally spaced
                ax.plot([1 / (1 - q) for q in xs], ys, style, color=colors[t], label=f"{t}, {c} clients")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
        ax.set_title(TITLES.get(b, b), fontsize=9)
        ax.set_ylabel("latency, ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Latency distribution, {nodes}-node Nacre vs {nodes}-node etcd")
    fig.tight_layout()
    lp = os.path.join(img, f"etcd-latency-{nodes}node.png")
    fig.savefig(lp, dpi=110)
    plt.close(fig)
    return tp, lp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--doc")
    ap.add_argument("--img", default="docs/img")
    ap.add_argument("--meta", default="")
    a = ap.parse_args()
    runs = load(a.results)
    tp, lp = plots(runs, a.nodes, a.img)
    rel = lambda p: os.path.relpath(p, os.path.dirname(os.path.abspath(a.doc)) if a.doc else ".")
    n = a.nodes
    setup = (
        "single-node Nacre against single-node etcd (fsync on both sides)"
        if n == 1
        else "3-node Nacre against 3-node etcd, all on loopback (fsync on both sides)"
    )
    section = f"""<!-- compare-etcd:{n}node:begin -->
### {n}-node run: {setup}

Generated by `bench/compare-etcd.sh --nodes {n}` ({a.meta}). Raw reports:
`bench/results/compare-etcd-{n}node.jsonl`.

{table(runs)}

![throughput against clients]({rel(tp)})

![latency distribution]({rel(lp)})
<!-- compare-etcd:{n}node:end -->"""
    if not a.doc:
        print(section)
        return
    text = open(a.doc).read() if os.path.exists(a.doc) else ""
    pat = re.compile(
        rf"<!-- compare-etcd:{n}node:begin -->.*?<!-- compare-etcd:{n}node:end -->", re.S
    )
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(a.doc, "w") as f:
        f.write(text)
    print(f"wrote {a.doc}, {tp}, {lp}", file=sys.stderr)


if __name__ == "__main__":
    main()
