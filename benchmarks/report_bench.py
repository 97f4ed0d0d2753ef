"""Time to write the reports of a 10,000-task run (issue target: under 2 s, docs/CI.md).

Usage: python benchmarks/report_bench.py [--tasks 10000] [--failed 0.1] [--repeat 3]
Builds a finished run in a fresh SQLite store (every task one attempt, a share of them failed
with a 60-line log), then times what `runner report RUN --junit PATH --summary PATH` does: read
the run and the failed tasks' logs, render JUnit XML and Markdown, write both files.
Prints the median and the slowest wall seconds. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from runner import models, report
from runner.models import Kind, Outcome, Plan, TaskSpec, TaskState
from runner.store import open_store


def _store_with_run(folder: Path, n: int, failed_share: float) -> tuple[str, str]:
    url = f"sqlite:///{folder / 'state.db'}"
    store = open_store(url)
    try:
        tasks = tuple(
            TaskSpec(id=f"t{i}", name=f"t{i}", kind=Kind.RUN, run="true") for i in range(n)
        )
        plan = Plan(workflow="bench", tasks=tasks, hash="x")
        store.create_run(plan, run_id="bench-1", now=time.time())
        worker = models.WorkerInfo(id="w", name="w", capacity=n)
        store.register_worker(worker, now=time.time(), ttl=600)
        every = max(1, round(1 / failed_share)) if failed_share > 0 else 0
        log = "".join(f"2026-01-01T00:00:00.000Z line {j}\n" for j in range(60))
        while leases := store.claim("w", now=time.time(), limit=500):
            for lease in leases:
                fails = every and int(lease.task_id[1:]) % every == 0
                outcome = Outcome(succeeded=not fails, exit_code=1 if fails else 0, log_tail=log)
                store.finish(lease, outcome, now=time.time())
        return url, "bench-1"
    finally:
        store.close()


def _once(url: str, run_id: str, out: Path) -> float:
    start = time.perf_counter()
    store = open_store(url)
    try:
        run = store.get_run(run_id)
        logs = {
            t.id: store.get_log(run_id, t.id, attempt=t.attempts[-1].number)
            for t in run.tasks
            if t.state is TaskState.FAILED
        }
    finally:
        store.close()
    (out / "junit.xml").write_text(report.junit_xml(run, logs=logs))
    (out / "summary.md").write_text(report.markdown(run))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--failed", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, run_id = _store_with_run(folder, args.tasks, args.failed)
        times = [_once(url, run_id, folder) for _ in range(args.repeat)]
    print(
        f"{args.tasks} tasks, {args.failed:.0%} failed: median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s"
    )


if __name__ == "__main__":
    main()
