"""`runner get run RUN --format gantt|mermaid|dot`: a run's attempts on a time line, or its DAG
coloured by task state (runner.rungraph draws; this module prints)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from runner.cli import output
from runner.models import Run
from runner.store import Store

FORMATS = ("gantt", "mermaid", "dot")
_MARKS = {"succeeded": "█", "running": "▶", "failed": "✗", "lost": "?", "cancelled": "-"}
_STYLES = {"succeeded": "green", "running": "blue", "failed": "red", "lost": "dark_orange"}


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="gantt: the attempts on a time line; mermaid|dot: the DAG coloured by task state",
    )


def show(store: Store, run: Run, args: argparse.Namespace, stream: TextIO | None = None) -> None:
    from runner import rungraph  # only this command draws: load it when it runs

    stream = stream or sys.stdout
    if args.format == "gantt":
        print_gantt(run, now=time.time(), stream=stream)
        return
    deps = rungraph.dependencies(run)
    render = rungraph.render_dot if args.format == "dot" else rungraph.render_mermaid
    stream.write(render(run, deps))


def print_gantt(run: Run, *, now: float, stream: TextIO, width: int = 60) -> None:
    """One line per attempt: task, attempt, a bar placed on the run's time line, worker."""
    from rich.console import Console
    from rich.text import Text

    from runner import rungraph

    console = Console(file=stream, width=200, soft_wrap=True, highlight=False)
    bars = rungraph.gantt_bars(run, now=now)
    start, end = rungraph.span(bars)
    scale = width / (end - start)
    name_width = max((len(b.task) for b in bars), default=4)
    console.print(f"run {run.id}  {run.state.value}  {output.human_seconds(end - start)}")
    for b in bars:
        left = int((b.start - start) * scale)
        length = max(1, int((b.end - start) * scale) - left)
        line = Text(f"{b.task:<{name_width}}  #{b.attempt}  ")
        line.append(" " * left + _MARKS.get(b.state, "#") * length, style=_STYLES.get(b.state))
        line.append(" " * (width - left - length + 2))
        line.append(f"{b.state} {output.human_seconds(b.end - b.start)} on {b.worker}")
        if b.reason not in (None, "exit"):
            line.append(f" ({b.reason})")
        console.print(line)
    waiting = [t for t in run.tasks if not t.attempts]
    for t in waiting:
        console.print(f"{t.id:<{name_width}}  --  {t.waiting_reason or t.state.value}")
    console.print("legend: █ succeeded  ▶ running  ✗ failed  ? lost  - cancelled")
