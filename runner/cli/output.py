"""How runs look on the terminal and in `-o json|yaml`: the documented output contract."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from runner import views, yamlsafe
from runner.models import Run, WorkerInfo

# The -o json shapes live in runner.views, shared with the web dashboard's JSON API.
iso = views.iso
attempt_json = views.attempt_json
task_json = views.task_json
run_json = views.run_json
worker_json = views.worker_json


def dump(data: Any, fmt: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if fmt == "yaml":
        yamlsafe.dump(data, stream)
    else:
        json.dump(data, stream, indent=2)
        stream.write("\n")


def duration(run: Run, now: float | None = None) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at if run.finished_at is not None else (now or time.time())
    return human_seconds(end - run.started_at)


def human_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def runs_table(runs: list[Run], stream: TextIO | None = None) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "WORKFLOW", "STATE", "STARTED", "DURATION", "TASKS"):
        table.add_column(col)
    for run in runs:
        table.add_row(
            run.id,
            run.workflow,
            run.state.value,
            iso(run.started_at) or "-",
            duration(run),
            f"{run.tasks_done}/{run.tasks_total}",
        )
    Console(file=stream or sys.stdout, width=200, soft_wrap=True).print(table)


def run_detail(run: Run, stream: TextIO | None = None) -> None:
    console = Console(file=stream or sys.stdout, width=200, soft_wrap=True)
    console.print(
        f"run {run.id}  workflow {run.workflow}  state {run.state.value}"
        f"  tasks {run.tasks_done}/{run.tasks_total}  duration {duration(run)}"
        + (f"  reason {run.reason}" if run.reason else "")
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("TASK", "STATE", "PRIORITY", "ATTEMPTS", "LAST", "INFO"):
        table.add_column(col)
    for t in run.tasks:
        last = t.attempts[-1] if t.attempts else None
        info = t.waiting_reason or (last.error if last and last.error else "")
        table.add_row(
            t.id,
            t.state.value,
            str(t.priority),
            str(len(t.attempts)),
            last.reason.value if last and last.reason else "-",
            info or "",
        )
    console.print(table)


def workers_table(workers: list[WorkerInfo], *, now: float, stream: TextIO | None = None) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "ID", "HOST", "PID", "LABELS", "RUNNING", "WEIGHT", "HEARTBEAT"):
        table.add_column(col)
    for w in workers:
        labels = ",".join(f"{k}={v}" for k, v in sorted(w.labels.items())) or "-"
        table.add_row(
            w.name,
            w.id,
            w.host,
            str(w.pid),
            labels,
            f"{w.running}/{w.capacity}",
            str(w.weight),
            f"{human_seconds(max(0.0, now - w.heartbeat_at))} ago",
        )
    Console(file=stream or sys.stdout, width=200, soft_wrap=True).print(table)
