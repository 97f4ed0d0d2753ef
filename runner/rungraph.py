"""A run drawn: its DAG coloured by task state (dot, mermaid, a layered layout for the
dashboard, grouped by matrix for large runs) and the bars of its attempts' Gantt chart.

The edges are the stored tasks' own dependencies (`TaskRecord.depends`), so any run in the
store draws whole, whatever became of the file it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runner.models import Run, TaskRecord

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


def dependencies(run: Run) -> dict[str, tuple[str, ...]]:
    """Task id -> the ids it depends on, as stored with the run."""
    return {t.id: t.depends for t in run.tasks}


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
