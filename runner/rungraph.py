"""A run drawn: its DAG coloured by task state (dot, mermaid, a layered layout for the
dashboard, grouped by matrix for large runs) and the bars of its attempts' Gantt chart.

A stored run keeps its tasks but not their dependencies (the Store protocol has no read for
them), so the edges come from the run's plan when it can be found: the schedule of the same
workflow whose plan hash matches the run's, else a workflow file (`--workflows PATH`) that
expands to the run's plan hash with the run's params. Without it the DAG has no edges.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner import errors, planning, planview, workflow
from runner.models import Plan, Run, TaskRecord
from runner.store.base import Store

#: A run with more tasks than this is drawn as one node per task name (its matrix instances).
GROUP_ABOVE = 2000

STATE_COLOURS = {
    "pending": "#d0d4da",
    "ready": "#9ec5fe",
    "running": "#3d8bfd",
    "retrying": "#ffc107",
    "succeeded": "#4caf50",
    "failed": "#dc3545",
    "skipped": "#adb5bd",
    "cancelled": "#6c757d",
    "lost": "#fd7e14",
}


def find_plan(store: Store, run: Run, *, workflows: Sequence[Path] = ()) -> Plan | None:
    """The plan `run` was created from, when a schedule or a workflow file still has it."""
    try:
        entry = store.get_schedule(run.workflow)
    except errors.ScheduleNotFound:
        entry = None
    if entry is not None and entry.plan_hash == run.plan_hash:
        return planview.plan_from_json(entry.plan)
    for path in _workflow_files(workflows):
        try:
            wf = workflow.load(path)
            if wf.name != run.workflow:
                continue
            plan = planning.build_plan(wf.doc, source=wf.source, params=dict(run.params))
        except errors.RunnerError:
            continue  # an invalid or unrelated file: not this run's plan
        if plan.hash == run.plan_hash:
            return plan
    return None


class PlanCache:
    """`find_plan` for a long-lived process (the dashboard): plans by plan hash, which names
    one plan, so each workflow file is parsed once per plan rather than per page view; a
    plan not found is looked for again after `retry_after` seconds."""

    def __init__(self, *, workflows: Sequence[Path] = (), retry_after: float = 30.0) -> None:
        self.workflows = tuple(workflows)
        self.retry_after = retry_after
        self._found: dict[str, Plan] = {}
        self._missing: dict[str, float] = {}  # plan hash -> when it was last looked for
        self._lock = threading.Lock()

    def find(self, store: Store, run: Run, *, now: float) -> Plan | None:
        with self._lock:
            plan = self._found.get(run.plan_hash)
            missed = self._missing.get(run.plan_hash)
        if plan is not None or (missed is not None and now - missed < self.retry_after):
            return plan
        plan = find_plan(store, run, workflows=self.workflows)
        with self._lock:
            if plan is None:
                self._missing[run.plan_hash] = now
            else:
                self._found[run.plan_hash] = plan
                self._missing.pop(run.plan_hash, None)
        return plan


def _workflow_files(paths: Sequence[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            yield path


def dependencies(plan: Plan | None, run: Run) -> dict[str, tuple[str, ...]]:
    """Task id -> the ids it depends on (all empty without a plan)."""
    known = {t.id: tuple(t.depends) for t in plan.tasks} if plan is not None else {}
    return {t.id: known.get(t.id, ()) for t in run.tasks}


# ---------------------------------------------------------------------- text formats


def render_dot(run: Run, deps: Mapping[str, Sequence[str]]) -> str:
    """A Graphviz digraph of the run, each task filled with its state's colour."""
    lines = [f"digraph {json.dumps(run.id)} {{", "  rankdir=LR;", "  node [style=filled];"]
    for t in run.tasks:
        label = json.dumps(t.id)[1:-1] + f"\\n{t.state.value}"
        colour = STATE_COLOURS.get(t.state.value, "#ffffff")
        lines.append(f'  {json.dumps(t.id)} [label="{label}", fillcolor="{colour}"];')
    for t in run.tasks:
        lines.extend(f"  {json.dumps(d)} -> {json.dumps(t.id)};" for d in deps.get(t.id, ()))
    return "\n".join([*lines, "}"]) + "\n"


def render_mermaid(run: Run, deps: Mapping[str, Sequence[str]]) -> str:
    """A Mermaid flowchart of the run, one class per task state."""
    ids = {t.id: f"t{i}" for i, t in enumerate(run.tasks)}
    lines = ["flowchart LR"]
    for t in run.tasks:
        label = f"{t.id}<br/>{t.state.value}".replace('"', "#quot;")
        lines.append(f'  {ids[t.id]}["{label}"]:::{t.state.value}')
    for t in run.tasks:
        lines.extend(f"  {ids[d]} --> {ids[t.id]}" for d in deps.get(t.id, ()) if d in ids)
    used = sorted({t.state.value for t in run.tasks})
    lines.extend(f"  classDef {s} fill:{STATE_COLOURS.get(s, '#fff')}" for s in used)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    id: str
    label: str
    state: str  # the task's state, or a group's "worst" state
    column: int
    row: int
    counts: dict[str, int] = field(default_factory=dict)  # groups: tasks by state
    task: str | None = None  # the task id a node stands for (None for a group)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    nodes: list[Node]
    edges: list[tuple[str, str]]
    grouped: bool
    columns: int
    rows: int


_WORST = ("failed", "running", "retrying", "ready", "pending", "cancelled", "skipped")


def _depths(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Longest path from a root; `order` is topological (the plan's and the run's order)."""
    depth: dict[str, int] = {}
    for node in order:
        depth[node] = 1 + max((depth.get(d, -1) for d in deps.get(node, ())), default=-1)
    return depth


def _place(order: Sequence[str], depth: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    rows: dict[int, int] = {}
    placed: dict[str, tuple[int, int]] = {}
    for node in order:
        col = depth[node]
        placed[node] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return placed


def layout(
    run: Run, deps: Mapping[str, Sequence[str]], *, group_above: int = GROUP_ABOVE
) -> Layout:
    """Nodes in columns by depth (left to right in dependency order); one node per task, or
    per task name (its matrix instances) for a run of more than `group_above` tasks."""
    if len(run.tasks) > group_above:
        return _grouped(run, deps)
    order = [t.id for t in run.tasks]
    placed = _place(order, _depths(order, deps))
    nodes = [
        Node(
            id=t.id,
            label=t.id,
            state=t.state.value,
            column=placed[t.id][0],
            row=placed[t.id][1],
            task=t.id,
        )
        for t in run.tasks
    ]
    edges = [(d, t.id) for t in run.tasks for d in deps.get(t.id, ()) if d in placed]
    return _finish(nodes, edges, grouped=False)


def _grouped(run: Run, deps: Mapping[str, Sequence[str]]) -> Layout:
    name_of = {t.id: t.name for t in run.tasks}
    members: dict[str, list[TaskRecord]] = {}
    for t in run.tasks:
        members.setdefault(t.name, []).append(t)
    gdeps: dict[str, set[str]] = {name: set() for name in members}
    for t in run.tasks:
        gdeps[t.name].update(name_of[d] for d in deps.get(t.id, ()) if d in name_of)
    order = list(members)
    placed = _place(order, _depths(order, {k: sorted(v) for k, v in gdeps.items()}))
    nodes = []
    for name, tasks in members.items():
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        state = next((s for s in _WORST if s in counts), "succeeded")
        label = f"{name} ×{len(tasks)}"
        col, row = placed[name]
        nodes.append(Node(id=name, label=label, state=state, column=col, row=row, counts=counts))
    edges = sorted((d, name) for name, ds in gdeps.items() for d in ds)
    return _finish(nodes, edges, grouped=True)


def _finish(nodes: list[Node], edges: list[tuple[str, str]], *, grouped: bool) -> Layout:
    columns = 1 + max((n.column for n in nodes), default=0)
    rows = 1 + max((n.row for n in nodes), default=0)
    return Layout(nodes=nodes, edges=edges, grouped=grouped, columns=columns, rows=rows)


# ---------------------------------------------------------------------- gantt


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    task: str
    attempt: int
    state: str
    worker: str
    start: float
    end: float
    reason: str | None
    error: str | None


def gantt_bars(run: Run, *, now: float) -> list[Bar]:
    """One bar per attempt, in task order; a running attempt ends at `now`."""
    return [
        Bar(
            task=t.id,
            attempt=a.number,
            state=a.state.value,
            worker=a.worker,
            start=a.started_at,
            end=a.finished_at if a.finished_at is not None else now,
            reason=a.reason.value if a.reason else None,
            error=a.error,
        )
        for t in run.tasks
        for a in t.attempts
    ]


def span(bars: Sequence[Bar]) -> tuple[float, float]:
    """The time the bars cover (never empty)."""
    if not bars:
        return 0.0, 1.0
    start = min(b.start for b in bars)
    return start, max(max(b.end for b in bars), start + 0.001)
