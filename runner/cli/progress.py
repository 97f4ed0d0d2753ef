"""Live progress of a run: a redrawn summary on a terminal, plain timestamped lines elsewhere."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from runner.cli.output import human_seconds, iso
from runner.models import Attempt, AttemptState, Plan, Reason, Run, TaskRecord, TaskState

if TYPE_CHECKING:
    from runner.engine import Change


DETAIL_MAX = 10_000  # a larger run is followed by its counts: a look at every task is O(run)


class PlainProgress:
    """One line per event, for CI logs and pipes, stamped with the time the store recorded
    (an attempt's start and end, a task's entry into the queue, the run's start and end), not
    when the follower noticed. Every attempt's end is a line, retried failures included:
    `extract[region=apac] failed (attempt 1 of 4), retrying in 2s`. With the plan, attempts
    are counted against the task's retries and the backoff is the policy's. The run is read
    whole at most every `detail_every` seconds: the lines carry the recorded times, so reading
    less often than a terminal's redraw delays them a little and changes none."""

    detail_every = 1.0

    def __init__(self, stream: TextIO, *, plan: Plan | None = None) -> None:
        self.stream = stream
        self._run_state: str | None = None
        self._specs = {t.id: t for t in plan.tasks} if plan is not None else {}
        self._started: dict[str, int] = {}  # task id -> the last attempt whose start was said
        self._ended: dict[str, int] = {}  # task id -> the last attempt whose end was said
        self.on_change = self.update
        self.on_summary = None

    def update(self, run: Run, changes: list[Change]) -> None:
        events: list[tuple[float, str]] = []
        for task in run.tasks:
            events += self._attempt_events(task)
        tasks = {t.id: t for t in run.tasks}
        for change in changes:
            task = tasks[change.task_id]
            if _said_by_attempts(task, change.new):
                continue
            when = task.ready_at if change.new is TaskState.READY else None
            when = when or (run.finished_at if change.new.terminal else None) or run.created_at
            events.append((when, f"{task.id} {change.new.value}"))
        if run.state.value != self._run_state:
            self._run_state = run.state.value
            when = run.finished_at or run.started_at or run.created_at
            events.append((when, f"run {run.state.value}"))
        for when, text in sorted(events, key=lambda e: e[0]):
            print(f"{iso(when)} {run.id} {text}", file=self.stream, flush=True)

    def _attempt_events(self, task: TaskRecord) -> list[tuple[float, str]]:
        events: list[tuple[float, str]] = []
        for a in task.attempts:
            if a.number > self._started.get(task.id, 0):
                self._started[task.id] = a.number
                events.append((a.started_at, f"{task.id} running ({self._of(task, a.number)})"))
            if a.finished_at is not None and a.number > self._ended.get(task.id, 0):
                self._ended[task.id] = a.number
                events.append((a.finished_at, f"{task.id} {self._ended_text(task, a)}"))
        return events

    def _of(self, task: TaskRecord, number: int) -> str:
        spec = self._specs.get(task.id)
        return f"attempt {number}" + (f" of {spec.retries.limit + 1}" if spec else "")

    def _ended_text(self, task: TaskRecord, a: Attempt) -> str:
        if a.reason is Reason.CACHED:
            return f"{a.state.value} (cached)"
        why = ""
        if a.error or (a.reason and a.reason not in (Reason.EXIT, Reason.LOST)):
            why = f", {a.error or a.reason}"
        text = f"{a.state.value} ({self._of(task, a.number)}{why})"
        if a.number < task.attempts[-1].number or not task.state.terminal:
            if a.state is AttemptState.LOST:
                return text + ", back in the queue"
            if a.state is AttemptState.FAILED:
                return text + f", retrying{self._backoff(task, a)}"
        return text

    def _backoff(self, task: TaskRecord, a: Attempt) -> str:
        spec = self._specs.get(task.id)
        failed = sum(1 for x in task.attempts[: a.number] if x.state is AttemptState.FAILED)
        if spec is not None:
            delay: float | None = spec.retries.delay_for(failed)
        elif task.state is TaskState.RETRYING and task.ready_at and a.finished_at:
            delay = task.ready_at - a.finished_at
        else:
            delay = None
        return "" if delay is None else f" in {human_seconds(max(0.0, delay))}"

    def close(self) -> None:
        pass


def _said_by_attempts(task: TaskRecord, state: TaskState) -> bool:
    """Whether the attempt lines already say this state change (running, retrying, and a
    task's end by its last attempt's end)."""
    if state in (TaskState.RUNNING, TaskState.RETRYING):
        return True
    if state in (TaskState.SUCCEEDED, TaskState.FAILED) and task.attempts:
        return task.attempts[-1].finished_at is not None
    return False


class LiveProgress:
    """A redrawn summary: counts by state and the tasks running now."""

    detail_every = 0.2

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console  # rich only on a terminal
        from rich.live import Live

        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()
        self.on_change = self.update
        self.on_summary = None

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


class CountsProgress:
    """A large run's progress from its summary alone: a line with how many of its tasks are
    done, every `every` seconds and when the run's state changes (the tasks are not read)."""

    detail_every = 0.2  # unused: no task is read

    def __init__(self, stream: TextIO, *, every: float) -> None:
        self.stream = stream
        self.every = every
        self._said: tuple[str, float] | None = None  # the last line's run state and time
        self.on_change = None
        self.on_summary = self.update

    def update(self, run: Run) -> None:
        now = time.monotonic()
        if self._said and self._said[0] == run.state.value and now - self._said[1] < self.every:
            return
        self._said = (run.state.value, now)
        when = run.finished_at or time.time()
        done = f"{run.tasks_done:,} of {run.tasks_total:,} tasks done"
        print(f"{iso(when)} {run.id} {run.state.value}: {done}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


Progress = PlainProgress | LiveProgress | CountsProgress


def make_progress(stream: TextIO, *, plan: Plan | None = None, total: int = 0) -> Progress:
    """The progress display of a run of `total` tasks on `stream`."""
    if total > DETAIL_MAX:
        return CountsProgress(stream, every=2.0 if stream.isatty() else 10.0)
    return LiveProgress(stream) if stream.isatty() else PlainProgress(stream, plan=plan)
