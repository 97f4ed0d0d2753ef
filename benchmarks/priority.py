"""The priority bound of the adaptive prefetch (docs/ARCHITECTURE.md, "Prefetch and the
priority order"): with the workers busy on a backlog of 2,000 no-op tasks at priority 0, how
long a task submitted at priority 10 waits to start.

    python benchmarks/priority.py [--store sqlite|etcd://HOST:PORT] [--processes 4] [--tries 20]

Each try submits a fresh backlog run, waits until its tasks are being run, submits the probe
(`runner.bench.urgent`: one no-op at priority 10), and takes its start time (measured inside
the task) minus the moment just before it was submitted; then cancels the backlog. Prints the
median and the spread with the worker flags used (default: the adaptive depth). Not a test:
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runner import bench, benchrun, engine
from runner.store import Store


def _try(store: Store, backlog: int) -> float:
    """One probe's wait to start, in seconds."""
    load = engine.submit(store, bench.independent(backlog), now=time.time())
    while store.get_run(load.id, tasks=False).tasks_done < min(200, backlog // 4):
        store.wait(0.05)  # the workers are busy on the backlog, prefetching as they do
    t0 = time.time()
    probe = engine.submit(store, bench.urgent(), now=t0)
    run = engine.follow(store, probe.id)
    started = float(run.tasks[0].outputs["start"])
    store.cancel_run(load.id, now=time.time(), reason="benchmark try done")
    return started - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", default="sqlite", help="sqlite, or etcd://HOST:PORT")
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--backlog", type=int, default=2000)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--processes", type=int, default=0, help="worker processes (0: in-process)")
    ap.add_argument("--prefetch", type=int, default=None, help="fixed depth (default adaptive)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-prio-") as tmp:
        url = benchrun.fresh_url(args.store, Path(tmp))
        try:
            with bench.serving(
                url,
                slots=args.slots,
                log_dir=tmp,
                processes=args.processes,
                prefetch=args.prefetch,
            ) as store:
                waits = [_try(store, args.backlog) * 1000 for _ in range(args.tries)]
        finally:
            benchrun.discard(url)
    flags = "adaptive" if args.prefetch is None else f"--prefetch {args.prefetch}"
    print(
        f"store {args.store.split('?', 1)[0]} · {args.slots} slots in "
        f"{args.processes or 'this'} process(es) · {flags} · load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"priority-10 task start after submit, ms: median {statistics.median(waits):.1f} "
        f"(min {min(waits):.1f}, max {max(waits):.1f}, {len(waits)} tries)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
