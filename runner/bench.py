"""The standard benchmark workloads of docs/BENCHMARKS.md as a library (W1-W5 on any store).

`benchmarks/workloads.py` prints the table recorded in docs/PERFORMANCE.md; users can point the
same workloads at their own deployment. Each figure is wall time from just before submitting to
the moment the submitting client knows the run is done, with the CPU seconds of this process and
its children (the store, on SQLite, is in-process; etcd's own CPU is not counted).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner import config, engine
from runner.executor import Executor
from runner.models import Kind, Plan, Run, TaskSpec, WorkerInfo
from runner.store import Store, open_store
from runner.worker import Worker

NOOP = "runner.benchtask:noop"  # a light module: see runner.benchtask


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


def urgent(priority: int = 10) -> Plan:
    """The priority probe: one no-op task at `priority` (the backlog's tasks have 0)."""
    spec = TaskSpec(id="urgent", name="urgent", kind=Kind.CALL, call=NOOP, priority=priority)
    return Plan(workflow="urgent", tasks=(spec,))


def open_url(url: str) -> Store:
    """The store at `url`, with the etcd credentials of the environment (RUNNER_ETCD_USER,
    RUNNER_ETCD_PASSWORD or _FILE), as `runner worker` processes open it."""
    settings = config.from_env(os.environ, store=url)
    return open_store(url, etcd_user=settings.etcd_user, etcd_password=settings.etcd_password)


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
    store_url: str,
    plan: Plan,
    *,
    slots: int = 4,
    log_dir: str,
    prefetch: int | None = None,
    processes: int = 0,
) -> Result:
    """Submit `plan` and return when the run is done. The work is served by one in-process
    worker of `slots` slots (as `runner apply` does), or with `processes` > 0 by that many
    `runner worker` processes sharing the slots (as a cluster does)."""
    submitter = open_url(store_url)
    workers = _Workers(store_url, slots=slots, log_dir=log_dir, prefetch=prefetch)
    try:
        workers.start(processes)
        workers.wait_registered(submitter)
        cpu0, t0 = tree_cpu(), time.perf_counter()
        run = engine.submit(submitter, plan, now=time.time())
        engine.follow(submitter, run.id, tasks=False)  # the client knows the run is done
        wall, cpu = time.perf_counter() - t0, tree_cpu() - cpu0
        run = submitter.get_run(run.id)
    finally:
        workers.stop()
        submitter.close()
    return Result(wall=wall, cpu=cpu, run=run)


@contextlib.contextmanager
def serving(
    store_url: str, *, slots: int, log_dir: str, processes: int = 0, prefetch: int | None = None
) -> Iterator[Store]:
    """Workers serving `store_url` as `run_workload` starts them, registered; yields a store
    of the submitting client's own."""
    submitter = open_url(store_url)
    workers = _Workers(store_url, slots=slots, log_dir=log_dir, prefetch=prefetch)
    try:
        workers.start(processes)
        workers.wait_registered(submitter)
        yield submitter
    finally:
        workers.stop()
        submitter.close()


class _Workers:
    def __init__(self, url: str, *, slots: int, log_dir: str, prefetch: int | None) -> None:
        self.url, self.slots, self.log_dir, self.prefetch = url, slots, log_dir, prefetch
        self.worker: Worker | None = None
        self.done = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, processes: int) -> None:
        if processes <= 0:
            self.worker = Worker(
                open_url(self.url),
                Executor(slots=self.slots, log_dir=self.log_dir, log_limit=64 * 1024),
                name="bench",
                concurrency=self.slots,
                prefetch=self.prefetch,
            )
            threading.Thread(target=self._serve, daemon=True).start()
            return
        env = {**os.environ, "RUNNER_STORE": self.url, "RUNNER_LOG_DIR": self.log_dir}
        per = max(1, self.slots // processes)
        argv = [sys.executable, "-m", "runner", "worker", "--concurrency", str(per)]
        if self.prefetch is not None:  # else the workers' default: adaptive
            argv += ["--prefetch", str(self.prefetch)]
        self.procs = [
            subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL) for _ in range(processes)
        ]

    def _serve(self) -> None:
        assert self.worker is not None
        try:
            self.worker.run()
        finally:
            self.done.set()

    def wait_registered(self, store: Store) -> None:
        deadline = time.monotonic() + 60
        want = max(1, len(self.procs))
        while len(store.list_workers(now=time.time())) < want:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's workers did not register")
            store.wait(0.1)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.done.wait()
            self.worker.store.close()
            self.worker.executor.close()
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait()


def handoffs(run: Run) -> list[float]:
    """W2: start of task i+1 minus end of task i, from the times the tasks recorded."""
    tasks = sorted(run.tasks, key=lambda t: int(t.id[1:]))
    return [
        float(b.outputs["start"]) - float(a.outputs["end"]) for a, b in itertools.pairwise(tasks)
    ]


def submit_only(store_url: str, plan: Plan) -> tuple[float, float]:
    """W5: seconds until every task is stored and the first is claimable; peak RSS in MiB."""
    store = open_url(store_url)
    try:
        t0 = time.perf_counter()
        engine.submit(store, plan, now=time.time())
        store.register_worker(WorkerInfo(id="w5", name="w5"), now=time.time(), ttl=30)
        claimed = store.claim("w5", now=time.time(), limit=1)
        seconds = time.perf_counter() - t0
        assert claimed, "the first task was not claimable"
        store.deregister_worker("w5", now=time.time())  # the claimed task goes back
    finally:
        store.close()
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(values: list[float]) -> str:
    """`median (min–max)`."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"
