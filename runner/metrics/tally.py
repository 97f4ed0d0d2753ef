"""What one stored run adds to the cluster series: pure counting over `models.Run` records.

A finished run's tally never changes (until `retry_run` reopens it), so the collector adds it
to its settled totals once; an unfinished run is tallied again at every collection.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from runner.models import AttemptState, Run, TaskRecord, TaskState

# Seconds: from a no-op call task (milliseconds) to a nightly batch (hours).
DURATION_BUCKETS = (0.005, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
# Seconds from ready to claimed: a hand-off (0) to a queue stuck for an hour.
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

QUEUED = (TaskState.READY, TaskState.RETRYING)
RAN_TO_AN_END = (AttemptState.SUCCEEDED, AttemptState.FAILED)


def band(priority: int) -> str:
    """The priority band of docs/METRICS.md: high (> 0), normal (0), low (< 0)."""
    return "high" if priority > 0 else "normal" if priority == 0 else "low"


@dataclass(slots=True)
class Hist:
    """A histogram's bucket counts (not cumulative), sum and count, mergeable."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.total += value
        self.n += 1

    def merge(self, other: Hist) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.n += other.n

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as `HistogramMetricFamily` takes them: (le, cumulative count), +Inf last."""
        out, acc = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            acc += count
            out.append(("+Inf" if math.isinf(bound) else repr(bound), float(acc)))
        return out


@dataclass(slots=True)
class Tally:
    """The counts one run contributes: by workflow, added up across runs by the collector."""

    tasks: Counter[str] = field(default_factory=Counter)  # terminal task state -> count
    losses: int = 0
    retries: int = 0
    duration: Hist = field(default_factory=lambda: Hist(DURATION_BUCKETS))
    wait: Hist = field(default_factory=lambda: Hist(WAIT_BUCKETS))

    def copy(self) -> Tally:
        out = Tally()
        out.merge(self)
        return out

    def merge(self, other: Tally) -> None:
        self.tasks.update(other.tasks)
        self.losses += other.losses
        self.retries += other.retries
        self.duration.merge(other.duration)
        self.wait.merge(other.wait)


def tally(run: Run) -> Tally:
    """Terminal tasks by state, attempts lost with dead workers, retries, the durations of the
    attempts that ran to an end, and each task's wait from ready to its latest claim."""
    out = Tally()
    for task in run.tasks:
        if task.state.terminal:
            out.tasks[task.state.value] += 1
        out.losses += task.losses
        out.retries += retries(task)
        for a in task.attempts:
            if a.state in RAN_TO_AN_END and a.finished_at is not None:
                out.duration.observe(max(0.0, a.finished_at - a.started_at))
        if task.attempts and task.ready_at is not None:
            started = task.attempts[-1].started_at
            if started >= task.ready_at:
                out.wait.observe(started - task.ready_at)
    return out


def retries(task: TaskRecord) -> int:
    """Attempts that followed a failed attempt of the same task."""
    return sum(1 for a in task.attempts[:-1] if a.state is AttemptState.FAILED)


@dataclass(frozen=True, slots=True)
class Queued:
    band: str
    state: str
    ready_at: float


def queued(runs: Iterable[Run]) -> list[Queued]:
    """Every queued task (ready, or retrying after a backoff) of `runs`."""
    return [
        Queued(band(t.priority), t.state.value, t.ready_at or 0.0)
        for run in runs
        for t in run.tasks
        if t.state in QUEUED
    ]
