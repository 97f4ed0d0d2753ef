"""The run page's pictures as SVG element data: the DAG (runner.rungraph's layout) and the
Gantt chart of attempts. Templates only place what is computed here."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from runner import rungraph
from runner.models import Run

NODE_W, NODE_H, GAP_X, GAP_Y = 190, 24, 50, 8
GANTT_W, ROW_H, LABEL_W = 900, 16, 220
GANTT_ROWS = 1500  # tasks drawn in the Gantt chart; the table lists the rest


@dataclass(frozen=True, slots=True)
class Box:
    x: int
    y: int
    w: int
    label: str
    state: str
    title: str
    href: str | None


@dataclass(frozen=True, slots=True)
class Picture:
    width: int
    height: int
    boxes: list[Box]
    lines: list[str]  # SVG path data
    note: str = ""


def log_href(run_id: str, task_id: str, attempt: int | None = None) -> str:
    href = f"/runs/{quote(run_id, safe='')}/log?task={quote(task_id, safe='')}"
    return href if attempt is None else f"{href}&attempt={attempt}"


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def dag(run: Run, layout: rungraph.Layout) -> Picture:
    """Boxes in columns, edges as curves from a box's right edge to its successor's left."""
    at: dict[str, tuple[int, int]] = {}
    boxes = []
    for n in layout.nodes:
        x, y = n.column * (NODE_W + GAP_X), n.row * (NODE_H + GAP_Y)
        at[n.id] = (x, y)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(n.counts.items()))
        title = f"{n.label}: {counts or n.state}"
        href = (
            log_href(run.id, n.task)
            if n.task
            else f"/runs/{quote(run.id, safe='')}?name={quote(n.id)}"
        )
        boxes.append(Box(x, y, NODE_W, _short(n.label), n.state, title, href))
    lines = []
    mid = NODE_H // 2
    for a, b in layout.edges:
        (x1, y1), (x2, y2) = at[a], at[b]
        x1 += NODE_W
        c = (x2 - x1) // 2
        lines.append(f"M{x1},{y1 + mid} C{x1 + c},{y1 + mid} {x2 - c},{y2 + mid} {x2},{y2 + mid}")
    width = layout.columns * (NODE_W + GAP_X)
    height = layout.rows * (NODE_H + GAP_Y)
    note = "grouped by task name (matrix instances)" if layout.grouped else ""
    return Picture(width, height, boxes, lines, note)


def _bar(run: Run, b: rungraph.Bar, *, row: int, start: float, scale: float) -> Box:
    extra = f" ({b.reason})" if b.reason not in (None, "exit") else ""
    title = f"{b.task} #{b.attempt} {b.state}{extra} on {b.worker}, {b.end - b.start:.1f}s"
    title += f": {b.error}" if b.error else ""
    x = LABEL_W + int((b.start - start) * scale)
    w = max(2, int((b.end - b.start) * scale))
    return Box(x, row * ROW_H, w, b.task, b.state, title, log_href(run.id, b.task, b.attempt))


def gantt(run: Run, *, now: float) -> Picture:
    """One row per task with attempts (retries side by side, x = time), then one per task
    still waiting, with its waiting reason."""
    bars = rungraph.gantt_bars(run, now=now)
    start, end = rungraph.span(bars)
    scale = GANTT_W / (end - start)
    rows: dict[str, int] = {}
    boxes = []
    for b in bars:
        if b.task not in rows:
            if len(rows) == GANTT_ROWS:
                continue
            rows[b.task] = len(rows)
        boxes.append(_bar(run, b, row=rows[b.task], start=start, scale=scale))
    waiting = [t for t in run.tasks if not t.attempts][: max(0, GANTT_ROWS - len(rows))]
    for t in waiting:
        rows[t.id] = len(rows)
        reason = t.waiting_reason or t.state.value
        boxes.append(
            Box(LABEL_W, rows[t.id] * ROW_H, 0, reason, "", reason, log_href(run.id, t.id))
        )
    labels = [
        Box(0, y * ROW_H, LABEL_W - 6, _short(t, 32), "", t, log_href(run.id, t))
        for t, y in rows.items()
    ]
    total = len(run.tasks)
    note = f"first {GANTT_ROWS} of {total} tasks" if total > len(rows) else ""
    return Picture(LABEL_W + GANTT_W + 10, max(1, len(rows)) * ROW_H, labels + boxes, [], note)


def dag_svg(p: Picture) -> str:
    """The DAG's SVG body: edges, then linked boxes (built here, not in the template: a
    1,000-task run has thousands of elements, and a template would escape each one apart)."""
    parts = ['<g class="edges">', *(f'<path d="{d}"/>' for d in p.lines), "</g>"]
    for b in p.boxes:
        parts.append(
            f'<a href="{escape(b.href or "")}"><g class="node s-{b.state}" '
            f'transform="translate({b.x},{b.y})"><title>{escape(b.title)}</title>'
            f'<rect width="{b.w}" height="{NODE_H}" rx="4"/>'
            f'<text x="8" y="16">{escape(b.label)}</text></g></a>'
        )
    return "".join(parts)


def gantt_svg(p: Picture) -> str:
    """The Gantt chart's SVG body: task labels, and one linked bar per attempt."""
    parts = []
    for b in p.boxes:
        href = escape(b.href or "")
        if b.state:
            parts.append(
                f'<a href="{href}"><rect class="bar s-{b.state}" x="{b.x}" y="{b.y + 2}" '
                f'width="{b.w}" height="12"><title>{escape(b.title)}</title></rect></a>'
            )
        else:
            parts.append(
                f'<a href="{href}"><text class="label" x="{b.x}" y="{b.y + 12}">'
                f"<title>{escape(b.title)}</title>{escape(b.label)}</text></a>"
            )
    return "".join(parts)
