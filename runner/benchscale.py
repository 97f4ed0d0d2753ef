"""The CI-step and W6 rows of `runner bench` (see `benchrun` and docs/BENCHMARKS.md).

CI: `runner apply` of a workflow of 1,000 x `true` as a whole process (start-up, submit, run,
shutdown), beside `seq 1000 | xargs -P4 -n1 true` in the same run. W6: many independent no-op
tasks run to the end (1,000,000 on SQLite with 4 slots in one process, as `runner apply
--workers 4` runs them; 100,000 on etcd), from a fresh process so its peak RSS is its own.
As `runner apply`, it stores the run first and then starts the workers (the time counts from
just before the submit). A workflow file holds at most 100,000 tasks (docs/WORKFLOW.md), so
the plan is built in code.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner import bench, benchrun, engine

W6_SQLITE = 1_000_000
W6_ETCD = 100_000
CI_TASKS = 1000


def ci_workflow(folder: Path, n: int = CI_TASKS) -> Path:
    """A workflow file of `n` tasks running `true` (one matrix task)."""
    path = folder / f"ci-{n}.yaml"
    values = ", ".join(str(i) for i in range(n))
    path.write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: ci-step}\nspec:\n"
        f'  tasks:\n    - name: t\n      run: "true"\n      matrix: {{i: [{values}]}}\n'
    )
    return path


def ci_step(setup: benchrun.Setup) -> benchrun.Row:
    """`runner apply FILE --workers 4` as a whole process, each right after an xargs run."""
    workflow = ci_workflow(setup.folder)
    walls, refs = [], []
    for _ in range(setup.repeat):
        ref = benchrun.xargs()
        url = benchrun.fresh_url(setup.store, setup.folder)
        env = {**os.environ, "RUNNER_STORE": url, "RUNNER_LOG_DIR": str(setup.folder)}
        argv = [sys.executable, "-m", "runner", "apply", str(workflow), "--workers", "4"]
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        benchrun.discard(url)
        if ref is not None:
            refs.append(ref)
    wall = bench.summary(walls) + " s"
    figures: dict[str, Any] = {"wall_s": statistics.median(walls)}
    if len(refs) == len(walls):
        ratios = [w / x for w, x in zip(walls, refs, strict=True)]
        wall += f" (xargs -P4: {bench.summary(refs)} s; ratio {bench.summary(ratios)}×)"
        figures.update(xargs_wall_s=statistics.median(refs), ratio=statistics.median(ratios))
    rate = bench.summary([CI_TASKS / w for w in walls]) + " tasks/s"
    title = f"CI step: `runner apply` of {CI_TASKS:,} × `true`, whole process"
    return benchrun.Row("CI", title, rate, wall, "-", figures)


def _w6_child(setup: benchrun.Setup, n: int, out: Any) -> None:
    plan = bench.independent(n)
    url = benchrun.fresh_url(setup.store, setup.folder)
    try:
        # Submitted before the workers start, as `runner apply` does: on SQLite the run is
        # one transaction, which would keep serving workers from their heartbeats.
        cpu0, t0 = bench.tree_cpu(), time.perf_counter()
        submitter = bench.open_url(url)
        try:
            run = engine.submit(submitter, plan, now=time.time())
        finally:
            submitter.close()
        del plan
        with bench.serving(
            url,
            slots=setup.slots,
            log_dir=str(setup.folder),
            processes=setup.processes,
            prefetch=setup.prefetch,
        ) as store:
            engine.follow(store, run.id, tasks=False)
            wall, cpu = time.perf_counter() - t0, bench.tree_cpu() - cpu0
            done = store.get_run(run.id, tasks=False)
    finally:
        benchrun.discard(url)
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,  # the worker processes
    )
    out.put((wall, cpu, rss / 1024, done.state.value))


def w6(setup: benchrun.Setup, n: int | None = None) -> benchrun.Row:
    """W6 once (it is long), in a fresh process."""
    if n is None:
        n = W6_SQLITE if setup.store.startswith("sqlite") else W6_ETCD
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_w6_child, args=(setup, n, q))
    p.start()
    wall, cpu, rss, state = q.get()
    p.join()
    if state != "succeeded":
        raise RuntimeError(f"W6 run ended {state}")
    cpu_ms = cpu / n * 1000
    figures = {"tasks_per_s": n / wall, "wall_s": wall, "cpu_ms_per_task": cpu_ms}
    figures["peak_rss_mib"] = rss
    title = f"W6 {n:,} independent no-op tasks"
    rate = f"{n / wall:.0f} tasks/s"
    return benchrun.Row(
        "W6", title, rate, f"{wall:.1f} s, peak RSS {rss:.0f} MiB", f"{cpu_ms:.2f}", figures
    )
