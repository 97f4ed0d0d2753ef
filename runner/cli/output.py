"""How runs look on the terminal and in `-o json|yaml`: the documented output contract."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from runner import views
from runner.models import Run, WorkerInfo

if TYPE_CHECKING:  # rich loads with the first table: not for JSON or plain-line output
    from rich.console import Console
    from rich.table import Table


# The -o json shapes live in runner.views, shared with the web dashboard's JSON API.
iso = views.iso
attempt_json = views.attempt_json
task_json = views.task_json
run_json = views.run_json
worker_json = views.worker_json


def dump(data: Any, fmt: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if fmt == "yaml":
        from runner import yamlsafe  # PyYAML: only for `-o yaml`

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


def console(stream: TextIO | None = None) -> Console:
    """A rich console for tables on `stream` (default stdout), wide enough not to wrap rows.
    Cells are plain text: no markup, so a matrix instance id `extract[region=apac]` shows whole
    (rich would take `[region=apac]` for a style tag), and no highlighting."""
    from rich.console import Console

    return Console(
        file=stream or sys.stdout, width=200, soft_wrap=True, markup=False, highlight=False
    )


def table(*columns: str) -> Table:
    """A borderless rich table with bold `columns` headers."""
    from rich.table import Table

    rows = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        rows.add_column(column)
    return rows


def runs_table(runs: list[Run], stream: TextIO | None = None) -> None:
    rows = table("ID", "WORKFLOW", "STATE", "STARTED", "DURATION", "TASKS")
    for run in runs:
        rows.add_row(
            run.id,
            run.workflow,
            run.waiting_reason or run.state.value,  # e.g. "queued: group deploy-prod"
            iso(run.started_at) or "-",
            duration(run),
            f"{run.tasks_done}/{run.tasks_total}",
        )
    console(stream).print(rows)


def run_detail(run: Run, stream: TextIO | None = None) -> None:
    out = console(stream)
    out.print(
        f"run {run.id}  workflow {run.workflow}  state {run.state.value}"
        f"  tasks {run.tasks_done}/{run.tasks_total}  duration {duration(run)}"
        + (f"  reason {run.reason}" if run.reason else "")
        + (f"  {run.waiting_reason}" if run.waiting_reason else "")
    )
    rows = table("TASK", "STATE", "PRIORITY", "ATTEMPTS", "LAST", "INFO")
    for t in run.tasks:
        last = t.attempts[-1] if t.attempts else None
        info = t.waiting_reason or (last.error if last and last.error else "")
        rows.add_row(
            t.id,
            t.state.value,
            str(t.priority),
            str(len(t.attempts)),
            last.reason.value if last and last.reason else "-",
            info or "",
        )
    out.print(rows)
    if run.hooks:
        hooks = table("HOOK", "ON", "KIND", "STATE", "ATTEMPTS", "LAST ERROR")
        for h in run.hooks:
            on = ",".join(h.on)
            state = h.state.value
            hooks.add_row(str(h.index), on, h.kind, state, str(h.attempts), h.last_error or "")
        out.print(hooks)


def workers_table(workers: list[WorkerInfo], *, now: float, stream: TextIO | None = None) -> None:
    rows = table("NAME", "ID", "HOST", "PID", "LABELS", "RUNNING", "WEIGHT", "HEARTBEAT")
    for w in workers:
        labels = ",".join(f"{k}={v}" for k, v in sorted(w.labels.items())) or "-"
        rows.add_row(
            w.name,
            w.id,
            w.host,
            str(w.pid),
            labels,
            f"{w.running}/{w.capacity}",
            str(w.weight),
            _heartbeat_cell(w, now=now),
        )
    console(stream).print(rows)


def _heartbeat_cell(w: WorkerInfo, *, now: float) -> str:
    """How long ago the worker heartbeat, and its clock's disagreement when it has one."""
    if w.clock_skew is not None:  # its heartbeat_at is in a clock we do not share
        return f"clock {w.clock_skew:+.0f}s off the other workers'"
    return f"{human_seconds(max(0.0, now - w.heartbeat_at))} ago"
