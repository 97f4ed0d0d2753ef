"""Live progress of a run: a redrawn summary on a terminal, plain timestamped lines elsewhere."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from runner.cli.output import iso
from runner.models import Run, TaskState

if TYPE_CHECKING:
    from runner.engine import Change


class PlainProgress:
    """One line per task state change, for CI logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._run_state: str | None = None

    def update(self, run: Run, changes: list[Change]) -> None:
        stamp = iso(time.time())
        tasks = {t.id: t for t in run.tasks}
        for change in changes:
            task = tasks[change.task_id]
            extra = ""
            if task.attempts and change.new in (TaskState.FAILED, TaskState.RETRYING):
                last = task.attempts[-1]
                extra = f" ({last.error or last.reason or ''})"
            elif change.new is TaskState.SUCCEEDED and task.cached:
                extra = " (cached)"
            line = f"{stamp} {run.id} {change.task_id} {change.new.value}{extra}"
            print(line, file=self.stream, flush=True)
        if run.state.value != self._run_state:
            self._run_state = run.state.value
            print(f"{stamp} {run.id} run {run.state.value}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A redrawn summary: counts by state and the tasks running now."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console  # rich only on a terminal
        from rich.live import Live

        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, run: Run, changes: list[Change]) -> None:
        counts = Counter(t.state for t in run.tasks)
        running = [t.id for t in run.tasks if t.state is TaskState.RUNNING]
        done = sum(counts[s] for s in TaskState if s.terminal)
        from rich.text import Text

        text = Text()
        text.append(f"{run.id}  {run.state.value}  ", style="bold")
        text.append(f"{done}/{len(run.tasks)} done  ")
        text.append(f"{counts[TaskState.RUNNING]} running  ", style="cyan")
        text.append(f"{counts[TaskState.SUCCEEDED]} succeeded  ", style="green")
        text.append(f"{counts[TaskState.FAILED]} failed", style="red")
        if counts[TaskState.RETRYING]:
            text.append(f"  {counts[TaskState.RETRYING]} retrying", style="yellow")
        if counts[TaskState.SKIPPED] or counts[TaskState.CANCELLED]:
            text.append(
                f"  {counts[TaskState.SKIPPED]} skipped  {counts[TaskState.CANCELLED]} cancelled"
            )
        for task_id in running[:10]:
            text.append(f"\n  running {task_id}")
        if len(running) > 10:
            text.append(f"\n  … and {len(running) - 10} more")
        self.live.update(text)

    def close(self) -> None:
        self.live.stop()


def make_progress(stream: TextIO) -> PlainProgress | LiveProgress:
    return LiveProgress(stream) if stream.isatty() else PlainProgress(stream)
