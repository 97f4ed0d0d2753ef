"""An idle worker's CPU use, and how fast it picks up a task that becomes ready.

    python benchmarks/idle.py [--store URL] [--seconds 10] [--tasks 20]

Starts `runner worker` as a separate process, measures the CPU it (and its children) use while
idle for --seconds, then submits one-task runs from this process one at a time and reports the
pick-up latency: the attempt's start (stamped by the worker at claim) minus the run's creation
(stamped by the submitter). Targets (issue 3): < 1% CPU idle, pick-up <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner import bench, engine
from runner.store import open_store


def _cpu(pid: int) -> float:
    pids = [pid, *bench._descendants(pid)]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _wait_registered(url: str, deadline: float) -> None:
    store = open_store(url)
    try:
        while not store.list_workers(now=time.time()):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not register")
            store.wait(0.1)
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tasks", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'idle.db'}"
        env = {**os.environ, "RUNNER_STORE": url, "RUNNER_LOG_DIR": tmp}
        worker = subprocess.Popen(
            [sys.executable, "-m", "runner", "worker", "--concurrency", "2"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_registered(url, time.monotonic() + 30)
            cpu0, t0 = _cpu(worker.pid), time.monotonic()
            time.sleep(args.seconds)  # the measurement window itself, not synchronisation
            idle = (_cpu(worker.pid) - cpu0) / (time.monotonic() - t0) * 100
            latencies = _pickups(url, args.tasks)
        finally:
            worker.terminate()
            worker.wait()
    ms = sorted(x * 1000 for x in latencies)
    print(f"idle worker CPU: {idle:.2f}% over {args.seconds:.0f} s")
    print(
        f"pick-up latency over {len(ms)} runs: median {statistics.median(ms):.1f} ms, "
        f"p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms, max {ms[-1]:.1f} ms"
    )
    return 0


def _pickups(url: str, n: int) -> list[float]:
    store = open_store(url)
    out = []
    try:
        for _ in range(n):
            run = engine.submit(store, bench.independent(1), now=time.time())
            done = engine.follow(store, run.id)
            out.append(done.tasks[0].attempts[0].started_at - run.created_at)
    finally:
        store.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
