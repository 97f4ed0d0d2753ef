"""What deleted keys before the queue head cost an etcd 3.4 head read: etcd's CPU per read
(from /proc/PID/stat) from `queue/` and from the live head, as claimed entries pile up, and
after a compaction (docs/PERFORMANCE.md, "Fast by default", third pass). Use a fresh etcd:
it writes 2 × N keys under `t/` and compacts.

    python benchmarks/etcd_tombstones.py --port PORT --etcd-pid PID [--keys 100000]

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from runner.store.etcd import client as c
from runner.store.etcd import gc

QUEUE = "t/queue/"
VALUE = b'{"nb":0,"sel":{}}'


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _key(i: int) -> str:
    return f"{QUEUE}0999999999/00001765000000000000/{i:08d}/run-abc/task{i:06d}"


def _measure(cl: c.Client, pid: int, head: int, label: str, reads: int = 2000) -> None:
    end = _key(head + 512)
    out = []
    for name, start in (("from queue/", QUEUE), ("from the live head", _key(head))):
        cpu0, t0 = _cpu(pid), time.perf_counter()
        for _ in range(reads):
            cl.reads([c.span(start, end, 8)], "head")
        cpu, wall = _cpu(pid) - cpu0, time.perf_counter() - t0
        per_cpu, per_wall = 1e6 * cpu / reads, 1e6 * wall / reads
        out.append(f"{name}: {per_cpu:6.0f} µs etcd CPU, {per_wall:6.0f} µs wall")
    print(f"{label:28s} " + " | ".join(out), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--etcd-pid", type=int, required=True)
    ap.add_argument("--keys", type=int, default=100_000)
    args = ap.parse_args()
    cl = c.Client(c.Connection(endpoints=(("127.0.0.1", args.port),)))
    n, pid = args.keys, args.etcd_pid
    for i in range(0, n, 50):
        part = range(i, min(n, i + 50))
        ops = [c.put(_key(j), VALUE) for j in part]
        ops += [c.put(f"t/task/run-abc/task{j:06d}", b"x" * 300) for j in part]
        cl.txn([], ops, "load")
    deleted = 0
    _measure(cl, pid, 0, "0 deleted")
    for target in (1000, 3000, 10000, 30000):
        for i in range(deleted, target, 100):
            cl.txn([], [c.delete(_key(j)) for j in range(i, min(target, i + 100))], "delete")
        deleted = target
        _measure(cl, pid, deleted, f"{deleted} deleted")
    gc.compact_to(cl, cl.revision)
    time.sleep(1)
    _measure(cl, pid, deleted, f"{deleted} deleted, compacted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
