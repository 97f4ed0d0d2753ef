"""The standard benchmark workloads of BENCHMARKS.md as a library (W1-W5 on any store).

`benchmarks/workloads.py` prints the table recorded in docs/PERFORMANCE.md; users can point the
same workloads at their own deployment. Each figure is wall time from just before submitting to
the moment the submitting client knows the run is done, with the CPU seconds of this process and
its children (the store, on SQLite, is in-process; etcd's own CPU is not counted).
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runner import engine
from runner.executor import Executor
from runner.models import Kind, Plan, Run, TaskSpec, WorkerInfo
from runner.store import open_store
from runner.worker import Worker

NOOP = "runner.bench:noop"


def noop() -> dict[str, str]:
    """The no-op task: returns its start and end times so hand-off latency can be computed."""
    start = time.time()
    return {"start": repr(start), "end": repr(time.time())}


def _task(i: int, depends: tuple[str, ...] = (), kind: Kind = Kind.CALL) -> TaskSpec:
    if kind is Kind.CALL:
        return TaskSpec(id=f"t{i}", name=f"t{i}", kind=Kind.CALL, call=NOOP, depends=depends)
    return TaskSpec(id=f"t{i}", name=f"t{i}", kind=Kind.RUN, run="true", depends=depends)


def independent(n: int, kind: Kind = Kind.CALL) -> Plan:
    """W1 (call no-ops) and W4 (`run: true`): n independent tasks."""
    return Plan(workflow=f"independent-{n}", tasks=tuple(_task(i, kind=kind) for i in range(n)))


def chain(n: int) -> Plan:
    """W2: a linear chain, each task depending on the previous one."""
    tasks = [_task(0)] + [_task(i, (f"t{i - 1}",)) for i in range(1, n)]
    return Plan(workflow=f"chain-{n}", tasks=tuple(tasks))


def fan(n: int) -> Plan:
    """W3: one root, n parallel tasks, one join."""
    middle = [_task(i, ("t0",)) for i in range(1, n + 1)]
    join = _task(n + 1, tuple(t.id for t in middle))
    return Plan(workflow=f"fan-{n}", tasks=(_task(0), *middle, join))


def wide_dag(n: int) -> Plan:
    """W5: n tasks, each depending on one of the previous 10 (deterministically)."""
    tasks = [_task(0)]
    for i in range(1, n):
        back = 1 + (i * 7919) % min(10, i)
        tasks.append(_task(i, (f"t{i - back}",)))
    return Plan(workflow=f"dag-{n}", tasks=tuple(tasks))


@dataclass(frozen=True, slots=True)
class Result:
    wall: float
    cpu: float
    run: Run


def tree_cpu() -> float:
    """CPU seconds of this process, its live descendants and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def run_workload(
    store_url: str, plan: Plan, *, slots: int = 4, log_dir: str, prefetch: int = 0
) -> Result:
    """Submit `plan`, serve it with one worker of `slots` slots, return when the run is done."""
    submitter = open_store(store_url)
    worker = Worker(
        open_store(store_url),
        Executor(slots=slots, log_dir=log_dir, log_limit=64 * 1024),
        name="bench",
        concurrency=slots,
        prefetch=prefetch,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        cpu0, t0 = tree_cpu(), time.perf_counter()
        run = engine.submit(submitter, plan, now=time.time())
        run = engine.follow(submitter, run.id)
        wall, cpu = time.perf_counter() - t0, tree_cpu() - cpu0
    finally:
        worker.stop()
        thread.join()
        worker.store.close()
        worker.executor.close()
        submitter.close()
    return Result(wall=wall, cpu=cpu, run=run)


def handoffs(run: Run) -> list[float]:
    """W2: start of task i+1 minus end of task i, from the times the tasks recorded."""
    tasks = sorted(run.tasks, key=lambda t: int(t.id[1:]))
    return [
        float(b.outputs["start"]) - float(a.outputs["end"]) for a, b in itertools.pairwise(tasks)
    ]


def submit_only(store_url: str, plan: Plan) -> tuple[float, float]:
    """W5: seconds until every task is stored and the first is claimable; peak RSS in MiB."""
    store = open_store(store_url)
    try:
        t0 = time.perf_counter()
        engine.submit(store, plan, now=time.time())
        store.register_worker(WorkerInfo(id="w5", name="w5"), now=time.time(), ttl=30)
        claimed = store.claim("w5", now=time.time(), limit=1)
        seconds = time.perf_counter() - t0
        assert claimed, "the first task was not claimable"
    finally:
        store.close()
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(values: list[float]) -> str:
    """`median (min–max)`."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"
