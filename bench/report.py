#!/usr/bin/env python3
"""Turns plait-bench JSON records (one per line) into a Markdown table, a JSON summary and a
plot of fan-out latency versus clients. Usage: report.py RESULTS.jsonl [--mode M] ...

Servers are the records' labels: reference and plait, and hocuspocus when present (then the
table gets a hocuspocus column and a plait / hocuspocus ratio; older two-server files give the
two-server table as before)."""

import argparse
import json
import math
import os
import platform
import time

# (scenario, metric, label, better): better is "lower" or "higher".
METRICS = [
    ("fanout-rate", "p50_ms", "p50 latency (ms)", "lower"),
    ("fanout-rate", "p99_ms", "p99 latency (ms)", "lower"),
    ("fanout-rate", "max_ms", "max latency (ms)", "lower"),
    ("fanout-rate", "server_cpu_pct", "server CPU (%)", "lower"),
    ("fanout-closed", "deliveries_per_s", "deliveries/s", "higher"),
    ("fanout-closed", "p99_ms", "p99 latency (ms)", "lower"),
    ("fanout-closed", "server_cpu_pct", "server CPU (%)", None),
    ("fanout-closed", "gen_cpu_pct", "generator CPU (%)", None),
    ("rooms", "rss_per_room_kib", "server RSS per room (KiB)", "lower"),
    ("rooms", "p50_ms", "p50 latency (ms)", "lower"),
    ("rooms", "p99_ms", "p99 latency (ms)", "lower"),
    ("idle", "rss_per_conn_kib", "server RSS per connection (KiB)", "lower"),
    ("idle", "connects_per_s", "handshakes/s (setup)", "higher"),
    ("bigdoc", "edits_per_s", "ingest (edits/s)", "higher"),
    ("bigdoc", "step2_loaded_ms", "fresh client step 2, room loaded (ms)", "lower"),
    ("bigdoc", "step2_bytes", "step 2 size (bytes)", None),
    ("bigdoc", "server_rss_kib", "server RSS after ingest (KiB)", "lower"),
    ("bigdoc-cold", "step2_cold_ms", "fresh client step 2, room cold (ms)", "lower"),
    ("storm", "all_synced_s", "all clients synced (s)", "lower"),
    ("storm", "p50_synced_s", "median client synced (s)", "lower"),
    ("storm", "clients_failed", "clients not synced", "lower"),
]

PARAM_KEYS = {
    "fanout-rate": ("clients", "clients"),
    "fanout-closed": ("clients", "clients"),
    "rooms": ("rooms", "rooms"),
    "idle": ("connections", "conns"),
    "bigdoc": ("edits", "edits"),
    "bigdoc-cold": (None, None),
    "storm": ("clients", "clients"),
}


def fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    a = abs(v)
    if a >= 100000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


def key_of(rec):
    k, _ = PARAM_KEYS.get(rec["scenario"], (None, None))
    return rec["params"].get(k) if k else None


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def ratio_of(a, b):
    """a / b, or None without two numbers (or b = 0)."""
    return a / b if is_num(a) and is_num(b) and b != 0 else None


def verdict(values, better):
    """Names the best server among those with a number ("tie" if the best are equal; nothing
    if fewer than two have a number or all are 0)."""
    vals = {s: v for s, v in values.items() if is_num(v)}
    if not better or len(vals) < 2 or all(v == 0 for v in vals.values()):
        return ""
    best = min(vals.values()) if better == "lower" else max(vals.values())
    winners = [s for s, v in vals.items() if v == best]
    return winners[0] if len(winners) == 1 else "tie"


def table(recs):
    by = {}
    for r in recs:
        by[(r["server"], r["scenario"], key_of(r))] = r["metrics"]
    params = {}
    for r in recs:
        params.setdefault(r["scenario"], set()).add(key_of(r))
    hocus = any(r["server"] == "hocuspocus" for r in recs)
    servers = ["reference", "hocuspocus", "plait"] if hocus else ["reference", "plait"]
    rows = []
    for scen, metric, label, better in METRICS:
        for p in sorted(params.get(scen, []), key=lambda x: (x is None, x or 0)):
            vals = {s: by.get((s, scen, p), {}).get(metric) for s in servers}
            if all(v is None for v in vals.values()):
                continue
            ref, pl = vals["reference"], vals["plait"]
            _, pname = PARAM_KEYS.get(scen, (None, None))
            pdesc = f"{p:,} {pname}" if isinstance(p, int) and pname else ""
            row = {
                "scenario": scen, "params": pdesc, "metric": label, "key": metric,
                "reference": ref, "plait": pl, "ratio": ratio_of(pl, ref),
                "better": verdict(vals, better), "param_value": p,
            }
            if hocus:
                row["hocuspocus"] = vals["hocuspocus"]
                row["ratio_hocuspocus"] = ratio_of(pl, vals["hocuspocus"])
            rows.append(row)
    return rows, by, hocus


def targets(by):
    """Issue 7's targets for plait, each with the measured value and met/missed."""
    def get(scen, p, m):
        return by.get(("plait", scen, p), {}).get(m)

    def status(v, ok):
        if v is None:
            return "not measured"
        return "met" if ok(v) else "missed"

    out = []
    v = get("fanout-closed", 500, "deliveries_per_s")
    out.append(("fan-out, 500 clients, closed loop", ">= 1,300,000 deliveries/s", v, status(v, lambda x: x >= 1.3e6)))
    v = get("fanout-rate", 500, "p99_ms")
    out.append(("fan-out, 500 clients, 100 edits/s, p99", "< 5 ms", v, status(v, lambda x: x < 5)))
    vals = [m.get("rss_per_conn_kib") for (s, sc, p), m in by.items() if s == "plait" and sc == "idle"]
    v = max([x for x in vals if x is not None], default=None)
    out.append(("idle connection, server RSS", "<= 8 KiB each", v, status(v, lambda x: x <= 8)))
    conns = [p for (s, sc, p), m in by.items() if s == "plait" and sc == "idle" and m.get("clients_dropped") == 0]
    v = max(conns, default=None)
    out.append(("concurrent connections held", "100,000", v, "missed (limit of this machine: 20,000 fds)" if v and v < 100000 else status(v, lambda x: x >= 100000)))
    v = get("rooms", 1000, "rss_per_room_kib")
    out.append(("1,000 rooms x 2 light clients, RSS per room", "<= 10 KiB", v, status(v, lambda x: x <= 10)))
    bd = [(p, m) for (s, sc, p), m in by.items() if s == "plait" and sc == "bigdoc"]
    v = bd[0][1].get("edits_per_s") if bd else None
    out.append(("automerge-paper ingest, strict durability", ">= 150,000 edits/s", v, status(v, lambda x: x >= 150000)))
    v = bd[0][1].get("step2_loaded_ms") if bd else None
    out.append(("fresh client's step 2, room loaded", "<= 5 ms", v, status(v, lambda x: x <= 5)))
    v = get("bigdoc-cold", None, "step2_cold_ms")
    out.append(("fresh client's step 2, room cold", "<= 30 ms", v, status(v, lambda x: x <= 30)))
    v = get("storm", 2000, "all_synced_s")
    out.append(("storm, 2,000 clients with awareness", "all synced <= 1 s", v, status(v, lambda x: x <= 1)))
    return out


def plot(recs, path_png):
    pts = {}
    for r in recs:
        if r["scenario"] != "fanout-rate":
            continue
        m = r["metrics"]
        pts.setdefault(r["server"], []).append((r["params"]["clients"], m.get("p50_ms"), m.get("p99_ms")))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(pts, path_png[:-4] + ".svg")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = {"reference": "#888888", "hocuspocus": "#1c7ed6", "plait": "#d9480f"}
    for server, ps in sorted(pts.items()):
        ps.sort()
        xs = [p[0] for p in ps]
        c = colors.get(server, None)
        ax.plot(xs, [p[2] for p in ps], "-o", color=c, label=f"{server} p99")
        ax.plot(xs, [p[1] for p in ps], "--s", color=c, alpha=0.7, label=f"{server} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients in the room")
    ax.set_ylabel("writer send -> receiver latency (ms)")
    ax.set_title("Fan-out at 100 edits/s (one room, 4 writers)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_png)
    return path_png


def plot_svg(pts, path):
    """Fallback without matplotlib: a small SVG line chart (log-log)."""
    W, H, M = 640, 380, 60
    allx = [p[0] for ps in pts.values() for p in ps]
    ally = [v for ps in pts.values() for p in ps for v in p[1:] if v]
    if not allx or not ally:
        return None
    lx0, lx1 = math.log10(min(allx)), math.log10(max(allx)) + 1e-9
    ly0, ly1 = math.log10(min(ally)), math.log10(max(ally)) + 1e-9
    sx = lambda x: M + (math.log10(x) - lx0) / (lx1 - lx0) * (W - 2 * M)
    sy = lambda y: H - M - (math.log10(y) - ly0) / (ly1 - ly0) * (H - 2 * M)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W/2}" y="20" text-anchor="middle">Fan-out latency at 100 edits/s vs clients (log-log)</text>']
    colors = {"reference": "#888", "hocuspocus": "#1c7ed6", "plait": "#d9480f"}
    for i, (server, ps) in enumerate(sorted(pts.items())):
        ps.sort()
        for j, dash in ((2, ""), (1, ' stroke-dasharray="4 3"')):
            d = " ".join(f"{sx(p[0]):.1f},{sy(p[j]):.1f}" for p in ps if p[j])
            parts.append(f'<polyline fill="none" stroke="{colors.get(server, "#36c")}" stroke-width="2"{dash} points="{d}"/>')
        parts.append(f'<text x="{W-M-120}" y="{M+16*i}" fill="{colors.get(server, "#36c")}">{server} (solid p99, dashed p50)</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def pinned_hocuspocus():
    """The @hocuspocus/server version pinned next to this script, or "?"."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hocuspocus", "package.json")) as f:
            return json.load(f)["dependencies"]["@hocuspocus/server"]
    except (OSError, KeyError, ValueError):
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--dirty", default="0")
    ap.add_argument("--nproc", default=str(os.cpu_count()))
    ap.add_argument("--elapsed", default="?")
    ap.add_argument("--hocuspocus-version", default=None,
                    help="default: the version pinned in bench/hocuspocus/package.json")
    a = ap.parse_args()
    base = a.jsonl[:-6] if a.jsonl.endswith(".jsonl") else a.jsonl
    recs = load(a.jsonl)
    rows, by, hocus = table(recs)
    hocus_version = a.hocuspocus_version or pinned_hocuspocus()
    tg = targets(by)
    img = plot(recs, base + ".png")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "mode": a.mode,
        "plait_commit": a.commit,
        "uncommitted_server_changes": int(a.dirty),
        "machine": f"{platform.machine()}, {a.nproc} cores, Linux {platform.release()}",
        "elapsed_s": a.elapsed,
    }
    if hocus:
        meta["hocuspocus_version"] = hocus_version
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows,
                   "targets": [dict(zip(("target", "goal", "plait", "status"), t)) for t in tg],
                   "records": recs}, f, indent=1)
    plait_desc = (f"plait `{a.commit}`" + (f" with {a.dirty} uncommitted files in crates/ and src/" if int(a.dirty) else "")
                  + " (SQLite, strict durability)")
    if hocus:
        intro = (f"{plait_desc} vs the reference y-websocket 1.5.4 server and Hocuspocus {hocus_version} "
                 f"(`@hocuspocus/server`, no extensions), both in memory, {meta['machine']}; generator and server "
                 f"share the cores. Every scenario ran on a freshly started server. Ratios = plait / reference and "
                 f"plait / hocuspocus; `better` names the best of the three. Run took {a.elapsed} s.")
        header = ["| scenario | params | metric | reference | hocuspocus | plait | plait / reference | plait / hocuspocus | better |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|"]
    else:
        intro = (f"{plait_desc} vs the reference y-websocket 1.5.4 server (in memory), "
                 f"{meta['machine']}; generator and server share the cores. Every scenario ran on a freshly "
                 f"started server. Ratio = plait / reference; `better` names the side that wins. Run took {a.elapsed} s.")
        header = ["| scenario | params | metric | reference | plait | ratio | better |",
                  "|---|---|---|---:|---:|---:|---|"]
    lines = [f"# plait-bench results, {meta['date']} ({a.mode} mode)", "", intro, ""] + header
    na = lambda v: fmt(v) if v is not None else "n/a"
    for r in rows:
        if hocus:
            lines.append(f"| {r['scenario']} | {r['params']} | {r['metric']} | {fmt(r['reference'])} | "
                         f"{fmt(r['hocuspocus'])} | {fmt(r['plait'])} | {na(r['ratio'])} | "
                         f"{na(r['ratio_hocuspocus'])} | {r['better']} |")
        else:
            lines.append(f"| {r['scenario']} | {r['params']} | {r['metric']} | {fmt(r['reference'])} | {fmt(r['plait'])} | "
                         f"{na(r['ratio'])} | {r['better']} |")
    lines += ["", "## Targets from issue 7 (plait)", "", "| target | goal | plait | status |", "|---|---|---:|---|"]
    for t in tg:
        lines.append(f"| {t[0]} | {t[1]} | {fmt(t[2])} | {t[3]} |")
    if img:
        lines += ["", f"![fan-out latency vs clients]({os.path.basename(img)})"]
    lines += ["", "Raw records (every metric, including server CPU seconds, RSS and the generator's own CPU): "
              f"`{os.path.basename(base)}.jsonl`; summary: `{os.path.basename(base)}.json`.", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
