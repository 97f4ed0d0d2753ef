"""Executor timings: W4 (`run: "true"` x N, 4 slots) against xargs, and no-op call round trips.

Usage: python benchmarks/exec_bench.py [--tasks 1000] [--calls 5000] [--repeat 3]
Prints one row per case: median wall seconds (min-max), tasks/s, CPU seconds per task of
this process and its children.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runner import models
from runner.executor import Executor

SLOTS = 4


def _live_children_cpu() -> float:
    """CPU seconds of children still alive (the call pool, the reaper): not in RUSAGE_CHILDREN."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + _live_children_cpu()


def xargs(n: int) -> None:
    subprocess.run(f"seq {n} | xargs -P{SLOTS} -n1 true", shell=True, check=True)


def through_executor(spec: models.TaskSpec, n: int, log_dir: str) -> Callable[[], None]:
    executor = Executor(slots=SLOTS, log_dir=log_dir, log_limit=1 << 20)
    cancel = threading.Event()
    env = {"RUNNER_RUN_ID": "bench", "RUNNER_TASK_ID": "t", "RUNNER_ATTEMPT": "1"}

    def one(i: int) -> None:
        result = executor.run(spec, env=env, log_name=f"bench/{i}", cancel=cancel)
        assert result.succeeded, result

    def run_all() -> None:
        with ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(one, range(n)))

    run_all_warm = run_all
    if spec.kind is models.Kind.CALL:  # start the pool's children outside the timing
        with ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(one, range(SLOTS * 4)))
    run_all_warm.close = executor.close  # type: ignore[attr-defined]
    return run_all_warm


def measure(fn: Callable[[], None], repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return walls, cpus


def row(name: str, n: int, walls: list[float], cpus: list[float], ref: float | None) -> str:
    med = statistics.median(walls)
    ratio = f"{med / ref:5.2f}x" if ref else "     "
    return (
        f"{name:28} {n:6d} {med:7.3f} ({min(walls):.3f}-{max(walls):.3f}) "
        f"{n / med:8.0f} {1e3 * statistics.median(cpus) / n:8.3f} {ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python exec_bench.py, {os.cpu_count()} CPUs, {SLOTS} slots, median of {args.repeat}")
    print(f"{'case':28} {'tasks':>6} {'wall s (min-max)':>21} {'tasks/s':>8} {'cpu ms/t':>8} ratio")
    with tempfile.TemporaryDirectory() as tmp:
        ref_walls, ref_cpus = measure(lambda: xargs(args.tasks), args.repeat)
        ref = statistics.median(ref_walls)
        print(row("W4 xargs -P4 true", args.tasks, ref_walls, ref_cpus, None))
        cases = [
            (
                "W4 executor run: true",
                args.tasks,
                models.TaskSpec(id="t", name="t", kind=models.Kind.RUN, run="true"),
            ),
            (
                "executor args: [true]",
                args.tasks,
                models.TaskSpec(id="t", name="t", kind=models.Kind.ARGS, args=("true",)),
            ),
            (
                "executor call: no-op",
                args.calls,
                models.TaskSpec(
                    id="t",
                    name="t",
                    kind=models.Kind.CALL,
                    call="tests.callables:noop",
                ),
            ),
        ]
        for name, n, spec in cases:
            fn = through_executor(spec, n, tmp)
            walls, cpus = measure(fn, args.repeat)
            fn.close()  # type: ignore[attr-defined]
            print(row(name, n, walls, cpus, ref if spec.kind is not models.Kind.CALL else None))


if __name__ == "__main__":
    main()
