"""The standard workloads W1-W6 and CI measured as a table's rows: what `runner bench` prints and
`benchmarks/workloads.py` records in docs/PERFORMANCE.md (which adds the stores' own ceilings).

Each workload runs on a fresh namespace of the store it is given: a new SQLite file in
`folder`, or a new key prefix under an etcd URL's, so a benchmark never mixes with real runs.
Figures are medians of `repeat` runs with min-max, as docs/BENCHMARKS.md asks.
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runner import bench
from runner.models import Kind, Plan

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "CI", "W6")
DEFAULT = ("W1", "W2", "W3", "W4", "W5", "CI")  # W6 runs for minutes: only when asked


@dataclass(frozen=True, slots=True)
class Row:
    """One workload's figures: the table's cells and the numbers behind them."""

    workload: str
    title: str
    rate: str
    wall: str
    cpu_ms: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """Where and how the workloads run: `slots` concurrency slots in total, in this process
    (`processes` 0) or shared by that many `runner worker` processes."""

    store: str
    folder: Path
    repeat: int = 3
    slots: int = 4
    processes: int = 0
    prefetch: int | None = None  # None: the workers' default (adaptive)


def fresh_url(base: str, folder: Path) -> str:
    """A new namespace of the store `base` names: a new SQLite file in `folder` (`base` is
    "sqlite" or a sqlite URL), or a new key prefix below an etcd URL's (query kept)."""
    if base == "sqlite" or base.startswith("sqlite:"):
        return f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:12]}.db'}"
    parts = urlsplit(base)
    prefix = parts.path if parts.path not in ("", "/") else "/runner/"
    path = f"{prefix.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def measure(setup: Setup, only: tuple[str, ...] = DEFAULT, *, w5_100k: bool = False) -> list[Row]:
    """The rows of the workloads in `only`, in W1-W5, CI, W6 order."""
    rows: list[Row] = []
    if "W1" in only:
        rows.append(_rate(setup, "W1", "W1 2,000 no-op call tasks", bench.independent(2000)))
    if "W2" in only:
        rows.append(_w2(setup))
    if "W3" in only:
        rows.append(_rate(setup, "W3", "W3 1 → 500 → 1", bench.fan(500)))
    if "W4" in only:
        rows.append(_w4(setup))
    if "W5" in only:
        rows.append(_w5(setup, 10_000, setup.repeat))
        if w5_100k:
            rows.append(_w5(setup, 100_000, 1))
    if "CI" in only or "W6" in only:
        from runner import benchscale  # the rows that run `runner apply` and W6

        if "CI" in only:
            rows.append(benchscale.ci_step(setup))
        if "W6" in only:
            rows.append(benchscale.w6(setup))
    return rows


def _run(setup: Setup, plan: Plan) -> bench.Result:
    url = fresh_url(setup.store, setup.folder)
    try:
        result = bench.run_workload(
            url,
            plan,
            slots=setup.slots,
            log_dir=str(setup.folder),
            processes=setup.processes,
            prefetch=setup.prefetch,
        )
    finally:
        discard(url)
    if result.run.state.value != "succeeded":
        raise RuntimeError(f"benchmark run {result.run.id} ended {result.run.state.value}")
    return result


def _repeat(setup: Setup, fn: Callable[[], bench.Result]) -> list[bench.Result]:
    return [fn() for _ in range(setup.repeat)]


def _rate(setup: Setup, workload: str, title: str, plan: Plan) -> Row:
    n = len(plan.tasks)
    results = _repeat(setup, lambda: _run(setup, plan))
    walls = [r.wall for r in results]
    cpu_ms = statistics.median(r.cpu for r in results) / n * 1000
    rates = [n / w for w in walls]
    figures = {
        "tasks_per_s": statistics.median(rates),
        "wall_s": statistics.median(walls),
        "cpu_ms_per_task": cpu_ms,
    }
    rate, wall = bench.summary(rates) + " tasks/s", bench.summary(walls) + " s"
    return Row(workload, title, rate, wall, f"{cpu_ms:.2f}", figures)


def _w2(setup: Setup) -> Row:
    means, p50s, p95s, cpus = [], [], [], []
    for result in _repeat(setup, lambda: _run(setup, bench.chain(200))):
        hs = sorted(h * 1000 for h in bench.handoffs(result.run))
        means.append(statistics.mean(hs))
        p50s.append(statistics.median(hs))
        p95s.append(hs[int(len(hs) * 0.95) - 1])
        cpus.append(result.cpu)
    cpu_ms = statistics.median(cpus) / 200 * 1000
    rate = f"mean {bench.summary(means)} · p50 {bench.summary(p50s)} · p95 {bench.summary(p95s)} ms"
    figures = {
        "handoff_mean_ms": statistics.median(means),
        "handoff_p50_ms": statistics.median(p50s),
        "handoff_p95_ms": statistics.median(p95s),
        "cpu_ms_per_task": cpu_ms,
    }
    return Row("W2", "W2 chain of 200, hand-off", rate, "-", f"{cpu_ms:.2f}", figures)


def xargs() -> float | None:
    """Seconds for `seq 1000 | xargs -P4 -n1 true`; None where seq or xargs is missing."""
    if shutil.which("seq") is None or shutil.which("xargs") is None:
        return None
    t0 = time.perf_counter()
    subprocess.run("seq 1000 | xargs -P4 -n1 true", shell=True, check=True)
    return time.perf_counter() - t0


def _w4(setup: Setup) -> Row:
    """W4, each run right after an xargs run (the reference), so each ratio compares two runs
    seconds apart on a shared machine."""
    plan = bench.independent(1000, Kind.RUN)
    walls, cpus, refs = [], [], []
    for _ in range(setup.repeat):
        ref = xargs()
        result = _run(setup, plan)
        walls.append(result.wall)
        cpus.append(result.cpu)
        if ref is not None:
            refs.append(ref)
    cpu_ms = statistics.median(cpus) / 1000 * 1000
    wall = bench.summary(walls) + " s"
    figures: dict[str, Any] = {
        "tasks_per_s": statistics.median(1000 / w for w in walls),
        "wall_s": statistics.median(walls),
        "cpu_ms_per_task": cpu_ms,
    }
    if len(refs) == len(walls):
        ratios = [w / x for w, x in zip(walls, refs, strict=True)]
        wall += f" (xargs -P4: {bench.summary(refs)} s; ratio {bench.summary(ratios)}×)"
        figures.update(xargs_wall_s=statistics.median(refs), ratio=statistics.median(ratios))
    rate = bench.summary([1000 / w for w in walls]) + " tasks/s"
    return Row("W4", "W4 1,000 × `true`", rate, wall, f"{cpu_ms:.2f}", figures)


def _w5_child(url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(bench.submit_only(url, bench.wide_dag(n)))


def discard(url: str) -> None:
    """Delete what a workload left under an etcd namespace: its runs, cancelled first when
    unfinished (W5's are never run). A SQLite namespace is a file in the caller's folder."""
    if url.startswith("sqlite:"):
        return
    store = bench.open_url(url)
    try:
        for run in store.list_runs():
            if not run.state.terminal:
                store.cancel_run(run.id, now=time.time(), reason="benchmark done")
        store.gc(older_than=0.0, now=time.time() + 1.0)
    finally:
        store.close()


def _w5(setup: Setup, n: int, repeat: int) -> Row:
    """Submitted from a fresh process each time, so its peak RSS is the submission's."""
    ctx = multiprocessing.get_context("spawn")
    secs, rss = [], []
    for _ in range(repeat):
        q = ctx.Queue()
        url = fresh_url(setup.store, setup.folder)
        p = ctx.Process(target=_w5_child, args=(url, n, q))
        p.start()
        s, r = q.get()
        p.join()
        discard(url)
        secs.append(s)
        rss.append(r)
    title = f"W5 submit {n:,}-task DAG"
    figures = {"seconds": statistics.median(secs), "peak_rss_mib": statistics.median(rss)}
    peak = f"peak RSS {statistics.median(rss):.0f} MiB"
    return Row("W5", title, bench.summary(secs) + " s", peak, "-", figures)


def table(rows: list[Row]) -> str:
    """The rows as the Markdown table of docs/PERFORMANCE.md."""
    head = "| workload | rate / latency | wall | CPU ms per task |\n|---|---|---|---|\n"
    return head + "\n".join(f"| {r.title} | {r.rate} | {r.wall} | {r.cpu_ms} |" for r in rows)
