#!/usr/bin/env python3
"""Summarises a folded perf profile (inferno-collapse-perf output): samples per thread, the
functions with the largest inclusive share, and the largest self share. Generic parameters
and hashes are stripped so one function counts once per stack."""
import argparse
import collections
import json
import re

ap = argparse.ArgumentParser()
ap.add_argument("folded")
ap.add_argument("--result", help="the plait-bench JSONL line of the profiled run")
ap.add_argument("--title", default="")
ap.add_argument("--top", type=int, default=45)
a = ap.parse_args()


def clean(frame):
    prev = None
    while prev != frame:  # innermost generics first, until none are left
        prev, frame = frame, re.sub(r"<[^<>]*>", "", frame)
    return re.sub(r"::h[0-9a-f]{16}$", "", frame)[:120]


# Frames that every stack of a thread shares (runtime plumbing) say nothing.
PLUMBING = re.compile(
    r"^(clone3|start_thread|__rust_begin_short_backtrace|call_once|do_call|catch_unwind|"
    r"poll_future|poll_inner|with_mut|with|try_with|set|run|enter_runtime|budget|with_budget|"
    r"\{closure#\d+\}|\{async_fn#\d+\}|\{async_block#\d+\}|::poll|poll|core::ops::function::.*|"
    r"std::sys::.*|::new::thread_start|tokio::runtime::.*|.*task::harness.*|::call_once|run_worker|"
    r"set_scheduler|run_task|::next|with_context)$")

total = 0
threads = collections.Counter()
inclusive = collections.Counter()
self_ = collections.Counter()
for line in open(a.folded):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    frames = stack.split(";")
    threads[frames[0]] += n
    seen = set()
    for f in frames[1:]:
        c = clean(f)
        if c not in seen and not PLUMBING.match(c):
            inclusive[c] += n
            seen.add(c)
    self_[clean(frames[-1])] += n

print(a.title)
if a.result:
    with open(a.result) as fh:
        for row in fh:
            m = json.loads(row)["metrics"]
            keep = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
            print("run:", json.dumps(keep, sort_keys=True))
print(f"samples: {total}")
print("by thread: " + ", ".join(f"{t} {100 * n / total:.1f}%" for t, n in threads.most_common()))
print(f"\ninclusive share (top {a.top}):")
for f, n in inclusive.most_common(a.top):
    print(f"{100 * n / total:6.1f}%  {f}")
print("\nself share (top 25):")
for f, n in self_.most_common(25):
    print(f"{100 * n / total:6.1f}%  {f}")
