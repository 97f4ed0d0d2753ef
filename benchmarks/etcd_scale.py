"""etcd's own CPU per task as the queue grows: W1's 2,000 independent no-ops beside W6's
100,000, served by 4 `runner worker` processes with default flags (docs/PERFORMANCE.md,
"Fast by default"). etcd is a separate process, so its CPU is read from /proc/PID/stat;
runner's is this process's and the workers' (from the submit to the run's end).

    python benchmarks/etcd_scale.py --store etcd://HOST:PORT --etcd-pid PID [--sizes 2000,100000]

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from runner import bench, benchrun, engine


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(
    store_url: str, folder: Path, n: int, pid: int, processes: int
) -> tuple[float, float, float]:
    """Tasks per second, and etcd's and runner's (this process and the workers) CPU ms per
    task, for one run of n independent no-ops."""
    plan = bench.independent(n)
    url = benchrun.fresh_url(store_url, folder)
    try:
        with bench.serving(url, slots=4, log_dir=str(folder), processes=processes) as store:
            cpu0, ours0, t0 = _cpu(pid), bench.tree_cpu(), time.perf_counter()
            run = engine.submit(store, plan, now=time.time())
            engine.follow(store, run.id, tasks=False)
            wall, cpu = time.perf_counter() - t0, _cpu(pid) - cpu0
            ours = bench.tree_cpu() - ours0
    finally:
        benchrun.discard(url)
    return n / wall, cpu / n * 1000, ours / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True, help="etcd://HOST:PORT")
    ap.add_argument("--etcd-pid", type=int, required=True)
    ap.add_argument("--sizes", default="2000,100000")
    ap.add_argument("--processes", type=int, default=4)
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="runner-etcd-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rate, cpu_ms, ours_ms = _one(args.store, Path(tmp), n, args.etcd_pid, args.processes)
            print(
                f"{n:>9,} tasks: {rate:8.0f} tasks/s, etcd CPU {cpu_ms:.3f} ms per task,"
                f" runner CPU {ours_ms:.3f} ms per task"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
