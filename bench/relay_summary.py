#!/usr/bin/env python3
"""Summarises relay.sh's records: per scenario and server, the median over the rounds of CPU
per delivery (user + system, and each part), the server's context switches per thousand
deliveries, p50, p99 and deliveries/s, and each median's ratio to the relay's; then CPU per
delivery over the relay's round by round, and over the durable relay's (`relay-durable`: the
relay writing each frame to disk before relaying it) when it ran beside. A server labelled
KIND/split (run with the CPUs split between server and generator) is set beside relay/split.
Usage: relay_summary.py RECORDS.jsonl [--skip N] (N: lines written by earlier runs into the
same file)."""

import argparse
import json
import statistics

COLUMNS = [
    ("server_us_per_delivery", "CPU/delivery µs"),
    ("server_user_us_per_delivery", "user µs"),
    ("server_sys_us_per_delivery", "system µs"),
    ("server_switches_per_1k_deliveries", "switches/1k"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("deliveries_per_s", "deliveries/s"),
]


def relay_of(server, relay="relay"):
    """The relay run the same way as `server`: "relay", or "relay/split" for "plait/split"
    (`relay` names another baseline: "relay-durable" gives "relay-durable/split")."""
    _, slash, how = server.partition("/")
    return relay + slash + how


def round_ratios(ms, relay_ms):
    """CPU per delivery over the relay's, round by round: relay.sh writes each server's records
    in round order, so the n-th of one and the n-th of the relay ran side by side. None when
    the two ran a different number of rounds: the records then come from several runs with
    different servers, and the n-th of each need not have run together."""
    if len(ms) != len(relay_ms):
        return None
    key = "server_us_per_delivery"
    return [
        m[key] / r[key] for m, r in zip(ms, relay_ms) if key in m and key in r and r[key] > 0
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("records")
    ap.add_argument("--skip", type=int, default=0)
    args = ap.parse_args()
    runs = {}
    with open(args.records) as f:
        for line in list(f)[args.skip:]:
            r = json.loads(line)
            runs.setdefault((r["scenario"], r["server"]), []).append(r["metrics"])
    for scenario in sorted({s for s, _ in runs}):
        servers = [k for (s, k) in runs if s == scenario]
        medians = {}
        for server in servers:
            ms = runs[(scenario, server)]
            medians[server] = {
                key: statistics.median(m[key] for m in ms) if all(key in m for m in ms) else None
                for key, _ in COLUMNS
            }
        print(f"\n{scenario} (medians over rounds; ratio to the relay's median in brackets)\n")
        print("| server | rounds | " + " | ".join(label for _, label in COLUMNS) + " |")
        print("|---|---|" + "---|" * len(COLUMNS))
        for server in servers:
            cells = []
            for key, _ in COLUMNS:
                v = medians[server][key]
                if v is None:
                    cells.append("")
                    continue
                cell = f"{v:,.3g}" if v < 1000 else f"{v:,.0f}"
                relay = medians.get(relay_of(server))
                base = relay and relay.get(key)
                if base and server != relay_of(server):
                    cell += f" ({v / base:.2f}×)"
                cells.append(cell)
            print(f"| {server} | {len(runs[(scenario, server)])} | " + " | ".join(cells) + " |")
        for relay, what in [("relay", "the relay's"), ("relay-durable", "the durable relay's")]:
            print_round_ratios(runs, scenario, servers, relay, what)


def print_round_ratios(runs, scenario, servers, relay, what):
    """The table of each server's CPU per delivery over `relay`'s, round by round; nothing when
    `relay` did not run. Left out: `relay` itself, and beside the durable relay, the plain one."""
    paired = [
        (server, round_ratios(runs[(scenario, server)], runs[(scenario, relay_of(server, relay))]))
        for server in servers
        if server != relay_of(server, relay)
        and not (relay != "relay" and server == relay_of(server))
        and (scenario, relay_of(server, relay)) in runs
    ]
    if not paired:
        return
    # The machine's speed drifts between rounds; a ratio taken within each round, to the
    # relay run beside it, cancels the drift the medians above keep.
    print(f"\nCPU per delivery over {what} in the same round:\n")
    print("| server | median | rounds ≤ 1.3× | each round |")
    print("|---|---|---|---|")
    for server, ratios in paired:
        if ratios is None:
            print(f"| {server} | | | not paired: its rounds and {what} differ in number; "
                  "summarise one run of relay.sh at a time (--skip) |")
            continue
        each = " ".join(f"{r:.2f}" for r in ratios)
        within = sum(r <= 1.3 for r in ratios)
        print(
            f"| {server} | {statistics.median(ratios):.2f}× | {within} of {len(ratios)} "
            f"| {each} |"
        )


if __name__ == "__main__":
    main()
