#!/usr/bin/env python3
"""What one fsync costs the process that calls it (issue 17, fifteenth round): CPU time from
getrusage, so the kernel's I/O path counts as strict durability's does in a server's
/proc figures. Each turn writes 8 KiB (a strict commit's WAL frames, two pages) into a
preallocated file and calls fdatasync, then sleeps 10 ms, as edits 100 per second apart do;
a turn that only sleeps, and one that calls fdatasync with nothing to write, are the
baselines. Prints CPU per turn for each, and the fsync's own cost (a turn minus a sleep).

Usage: bench/fsync_cost.py [DIR] [--turns N]   (DIR: where the file goes, /tmp by default;
put it on the file system the store uses)."""

import argparse
import os
import resource
import tempfile
import time

PAGE = 8192


def turn_cpu_us(fd, buf, turns, write, sync):
    """Mean process CPU (user + system) per turn, in µs, and voluntary switches per turn."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(turns):
        if write:
            os.pwrite(fd, buf, i * PAGE)
        if sync:
            os.fdatasync(fd)
        time.sleep(0.01)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return cpu / turns * 1e6, (r1.ru_nvcsw - r0.ru_nvcsw) / turns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default="/tmp")
    ap.add_argument("--turns", type=int, default=400)
    args = ap.parse_args()
    fd, path = tempfile.mkstemp(dir=args.dir, prefix="fsync-cost-")
    try:
        os.write(fd, b"\0" * (PAGE * args.turns))
        os.fsync(fd)
        buf = os.urandom(PAGE)
        sleep, _ = turn_cpu_us(fd, buf, args.turns, write=False, sync=False)
        empty, empty_sw = turn_cpu_us(fd, buf, args.turns, write=False, sync=True)
        full, full_sw = turn_cpu_us(fd, buf, args.turns, write=True, sync=True)
        print(f"file on {args.dir}, {args.turns} turns of 10 ms")
        print(f"sleep only:               {sleep:6.0f} µs CPU per turn")
        print(f"fdatasync, nothing written: {empty:4.0f} µs ({empty - sleep:.0f} over a sleep; "
              f"{empty_sw:.1f} voluntary switches per turn)")
        print(f"8 KiB pwrite + fdatasync: {full:6.0f} µs ({full - sleep:.0f} over a sleep; "
              f"{full_sw:.1f} voluntary switches per turn)")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
