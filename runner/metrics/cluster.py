"""The cluster series: read from the store through the `Store` protocol when scraped.

Nothing here is counted on the claim path. A collection lists the runs and reads each
unfinished run with its tasks, each run that finished since the previous collection (once),
the live workers, locks, schedules and the leader. Collections closer together than
`min_interval` share one read, so several scrapers cost one; an unfinished run's tasks are read
again only every `task_interval` (a large run's read is the costly part of a collection).

The counters and histograms cover the runs this collector saw unfinished: those unfinished at
its first collection and every run started since. Runs that had already finished then are
not read at all (a store keeps a week of them by default), and a finished run's counts are
settled into per-workflow totals, so memory holds one (state, end time) pair per finished run
and the counters stay monotonic when `gc` deletes runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from runner import cronexpr, errors
from runner.metrics import families
from runner.metrics.tally import Queued, Tally, queued, tally
from runner.models import CronEntry, LockInfo, Run, WorkerInfo
from runner.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleView:
    entry: CronEntry
    period: float
    last_success: float
    last_failure: float


@dataclass(slots=True, kw_only=True)
class Snapshot:
    """One collection's reading of the store, as `families.cluster` turns into series."""

    ok: bool = False
    read_seconds: float = 0.0
    now: float = 0.0
    runs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (workflow, state)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)  # incl. retired
    tallies: dict[str, Tally] = field(default_factory=dict)  # by workflow, incl. retired
    queue: list[Queued] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    locks: list[LockInfo] = field(default_factory=list)
    schedules: list[ScheduleView] = field(default_factory=list)
    leader: str | None = None
    candidate: str | None = None


class ClusterCollector(Collector):
    """A prometheus_client collector of the cluster series of docs/METRICS.md.

    `candidate` is this process's scheduler candidate id, for `runner_scheduler_leading`.
    """

    def __init__(
        self,
        store: Store,
        *,
        candidate: str | None = None,
        min_interval: float = 2.0,
        task_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.min_interval = min_interval
        self.task_interval = task_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = -float("inf")  # monotonic time of the last read
        self._snapshot = Snapshot()
        self._first = True
        self._ended: dict[str, tuple[str, float | None]] = {}  # run -> (state, finished_at)
        self._settled: dict[str, Tally] = {}  # by workflow: the runs that ended while seen
        self._settled_runs: Counter[tuple[str, str]] = Counter()  # (workflow, final state)
        self._open: dict[str, tuple[float, Run, Tally]] = {}  # run -> (monotonic read, ...)
        self._last: dict[tuple[str, str], float] = {}  # (schedule, succeeded|failed) -> time

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering reads nothing from the store."""
        return families.cluster(Snapshot(ok=True, candidate=self.candidate), describe=True)

    def collect(self) -> Iterator[Metric]:
        yield from families.cluster(self.snapshot())

    def snapshot(self) -> Snapshot:
        """The latest reading, read again when older than `min_interval`."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.min_interval:
                self._snapshot = self._read()
                self._read_at = time.monotonic()
            return self._snapshot

    def _read(self) -> Snapshot:
        t0, now = time.perf_counter(), self.clock()
        snap = Snapshot(now=now, candidate=self.candidate)
        try:
            runs = self.store.list_runs()
            open_runs = self._tally_runs(runs, snap)
            snap.queue = queued(open_runs)
            snap.workers = self.store.list_workers(now=now)
            snap.locks = self.store.list_locks(now=now)
            snap.schedules = self._schedules(runs, now=now)
            snap.leader = self.store.leader(now=now)
        except errors.RunnerError as exc:
            logger.warning(
                "metrics: could not read the store: %s",
                exc,
                extra={"action": "metrics_read_failed"},
            )
            return Snapshot(ok=False, now=now, candidate=self.candidate)
        snap.ok = True
        snap.read_seconds = time.perf_counter() - t0
        return snap

    def _tally_runs(self, runs: list[Run], snap: Snapshot) -> list[Run]:
        """Fill the run and task counts; the unfinished runs, read with their tasks."""
        present = {r.id for r in runs}
        self._ended = {k: v for k, v in self._ended.items() if k in present}  # gc'd
        totals: dict[str, Tally] = {w: t.copy() for w, t in self._settled.items()}
        open_runs: list[Run] = []
        for summary in runs:
            snap.runs[(summary.workflow, summary.state.value)] += 1
            if self._settled_already(summary):
                continue
            read = self._read_run(summary)
            if read is None:
                continue
            run, one = read
            totals.setdefault(run.workflow, Tally()).merge(one)
            if run.state.terminal:
                self._settle(run, one)
            else:
                open_runs.append(run)
        self._open = {k: v for k, v in self._open.items() if k in {r.id for r in open_runs}}
        self._first = False
        snap.finished = Counter(self._settled_runs)
        snap.tallies = totals
        return open_runs

    def _read_run(self, summary: Run) -> tuple[Run, Tally] | None:
        """The run with its tasks and its tally: an unfinished run read less than
        `task_interval` ago is not read again; None when gc deleted it since it was listed."""
        cached = self._open.get(summary.id)
        fresh = cached is not None and time.monotonic() - cached[0] < self.task_interval
        if cached is not None and fresh and not summary.state.terminal:
            return cached[1], cached[2]
        try:
            run = self.store.get_run(summary.id, now=self.clock())
        except errors.RunNotFound:
            return None
        one = tally(run)
        self._open[run.id] = (time.monotonic(), run, one)
        return run, one

    def _settled_already(self, summary: Run) -> bool:
        """True for a finished run counted before (or finished before the first collection);
        a run `retry` reopened is read again."""
        if not summary.state.terminal:
            self._ended.pop(summary.id, None)
            return False
        ended = (summary.state.value, summary.finished_at)
        if self._first:
            self._ended[summary.id] = ended
        return self._ended.get(summary.id) == ended

    def _settle(self, run: Run, one: Tally) -> None:
        self._ended[run.id] = (run.state.value, run.finished_at)
        self._settled.setdefault(run.workflow, Tally()).merge(one)
        self._settled_runs[(run.workflow, run.state.value)] += 1

    def _schedules(self, runs: list[Run], *, now: float) -> list[ScheduleView]:
        for run in runs:  # runs a schedule fired (or `cron trigger` started) carry its time
            if run.scheduled_time is None or run.finished_at is None:
                continue
            if run.state.value in ("succeeded", "failed"):
                key = (run.workflow, run.state.value)
                self._last[key] = max(self._last.get(key, 0.0), run.finished_at)
        return [
            ScheduleView(
                entry=e,
                period=period(e, now=now),
                last_success=self._last.get((e.name, "succeeded"), 0.0),
                last_failure=self._last.get((e.name, "failed"), 0.0),
            )
            for e in self.store.list_schedules()
        ]


def period(entry: CronEntry, *, now: float) -> float:
    """Seconds between the schedule's next two ticks (0 when it cannot be computed)."""
    try:
        first, second = cronexpr.next_times(entry.schedule.cron, entry.schedule.timezone, now, 2)
    except (ValueError, KeyError):  # a schedule stored by a newer runner, an unknown zone
        return 0.0
    return second - first
