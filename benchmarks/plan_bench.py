"""Time load + validate + plan of a generated 10,000-task workflow (a script, not a test).

    .venv/bin/python benchmarks/plan_bench.py [--tasks 10000] [--runs 5]

Prints one table row per phase: median, min-max wall seconds and CPU seconds. Target: < 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from runner import planview, workflow


def generate(tasks: int) -> str:
    """A workflow of `tasks` tasks: chains, fan-in every 10th task, a few matrix tasks."""
    lines = [
        "apiVersion: runner/v1",
        "kind: Workflow",
        "metadata: {name: bench}",
        "spec:",
        "  params: {date: '2026-01-01'}",
        "  defaults: {retries: 2, timeout: 10m}",
        "  tasks:",
    ]
    for i in range(tasks):
        deps = [f"t{i - 1}"] if i % 10 else [f"t{j}" for j in range(max(0, i - 10), i, 3)]
        lines.append(f"    - name: t{i}")
        lines.append(f"      run: echo task {i} for ${{{{ params.date }}}}")
        if deps:
            lines.append(f"      depends: [{', '.join(deps)}]")
        if i % 7 == 0:
            lines.append("      retries: {limit: 3, backoff: {delay: 2s, factor: 2, max: 1m}}")
        if i % 11 == 0:
            lines.append(f"      priority: {i % 5}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(generate(opts.tasks), encoding="utf-8")
        phases: dict[str, list[tuple[float, float]]] = {
            "load+validate": [],
            "plan": [],
            "total": [],
        }
        for _ in range(opts.runs):
            w0, c0 = time.perf_counter(), time.process_time()
            wf = workflow.load(path)
            w1, c1 = time.perf_counter(), time.process_time()
            plan = workflow.plan(wf)
            json.dumps(planview.plan_to_json(plan))
            w2, c2 = time.perf_counter(), time.process_time()
            phases["load+validate"].append((w1 - w0, c1 - c0))
            phases["plan"].append((w2 - w1, c2 - c1))
            phases["total"].append((w2 - w0, c2 - c0))
    print(f"{opts.tasks} tasks, {len(plan.tasks)} instances, {opts.runs} runs")
    print(f"{'phase':<15} {'median s':>9} {'min-max s':>15} {'CPU s':>7}")
    for name, samples in phases.items():
        wall = [w for w, _ in samples]
        cpu = statistics.median(c for _, c in samples)
        span = f"{min(wall):.3f}-{max(wall):.3f}"
        print(f"{name:<15} {statistics.median(wall):>9.3f} {span:>15} {cpu:>7.3f}")


if __name__ == "__main__":
    main()
