"""The CI-step and W6 rows of `runner bench` (see `benchrun` and docs/BENCHMARKS.md).

CI: `runner apply` of a workflow of 1,000 x `true` as a whole process (start-up, submit, run,
shutdown), beside `seq 1000 | xargs -P4 -n1 true` in the same run. W6: many independent no-op
tasks from one matrix task in a workflow file, run to the end: 1,000,000 on SQLite by
`runner apply FILE --workers 4` as a whole process (planning the file streamed, storing, running,
exiting); 100,000 on etcd, the file's plan submitted here and served by the worker processes.
Each runs in a fresh process, so its peak RSS is its own.
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


def w6_workflow(folder: Path, n: int) -> Path:
    """A workflow file of `n` (a multiple of 1,000, or less) no-op call tasks: one matrix
    task of two axes, so the file stays small."""
    rows, cols = (n // 1000, 1000) if n >= 1000 else (1, n)
    if rows * cols != n:
        raise ValueError(f"W6 size {n:,}: use a multiple of 1,000")
    path = folder / f"w6-{n}.yaml"
    a, b = (", ".join(str(i) for i in range(k)) for k in (rows, cols))
    path.write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w6}\nspec:\n"
        f"  tasks:\n    - name: t\n      call: {bench.NOOP}\n"
        f"      matrix: {{a: [{a}], b: [{b}]}}\n"
    )
    return path


def _w6_apply(setup: benchrun.Setup, path: Path, url: str) -> str:
    """`runner apply FILE --workers N` as a whole process; the run's state."""
    env = {**os.environ, "RUNNER_STORE": url, "RUNNER_LOG_DIR": str(setup.folder)}
    argv = [sys.executable, "-m", "runner", "apply", str(path), "--workers", str(setup.slots)]
    if setup.prefetch is not None:
        argv += ["--prefetch", str(setup.prefetch)]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
    last = done.stdout.strip().splitlines()[-1:] or [""]
    return "succeeded" if done.returncode == 0 else f"exit {done.returncode}: {last[0]}"


def _w6_served(setup: benchrun.Setup, path: Path, url: str) -> str:
    """The file's plan submitted here, then served by the setup's workers (etcd: processes);
    submitted first, as `runner apply` does."""
    from runner import workflow

    submitter = bench.open_url(url)
    try:
        run = engine.submit(submitter, workflow.load_plan(path), now=time.time())
    finally:
        submitter.close()
    with bench.serving(
        url,
        slots=setup.slots,
        log_dir=str(setup.folder),
        processes=setup.processes,
        prefetch=setup.prefetch,
    ) as store:
        engine.follow(store, run.id, tasks=False)
        return store.get_run(run.id, tasks=False).state.value


def _w6_child(setup: benchrun.Setup, n: int, out: Any) -> None:
    path = w6_workflow(setup.folder, n)
    url = benchrun.fresh_url(setup.store, setup.folder)
    whole = url.startswith("sqlite:") and not setup.processes
    try:
        cpu0, t0 = bench.tree_cpu(), time.perf_counter()
        state = (_w6_apply if whole else _w6_served)(setup, path, url)
        wall, cpu = time.perf_counter() - t0, bench.tree_cpu() - cpu0
    finally:
        benchrun.discard(url)
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,  # `runner apply`, the workers
    )
    out.put((wall, cpu, rss / 1024, state))


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
