"""The cluster series: read from the store through the `Store` protocol when scraped.

Nothing here is counted on the claim path: a collection lists the runs, reads each unfinished
run (and each finished run once: its tally is kept), the live workers, locks, schedules and the
leader. Collections closer together than `min_interval` share one read, so several scrapers
cost one. Counters stay monotonic while the process lives: a run deleted by `gc` keeps its
counts in a retired tally.
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


@dataclass(slots=True)
class _Kept:
    """A finished run's tally, valid while the run keeps this state and end time."""

    workflow: str
    state: str
    finished_at: float | None
    tally: Tally


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.min_interval = min_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = -float("inf")  # monotonic time of the last read
        self._snapshot = Snapshot()
        self._kept: dict[str, _Kept] = {}
        self._retired: dict[str, Tally] = {}
        self._retired_runs: Counter[tuple[str, str]] = Counter()
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
            logger.warning("metrics: could not read the store: %s", exc,
                           extra={"action": "metrics_read_failed"})  # fmt: skip
            return Snapshot(ok=False, now=now, candidate=self.candidate)
        snap.ok = True
        snap.read_seconds = time.perf_counter() - t0
        return snap

    def _tally_runs(self, runs: list[Run], snap: Snapshot) -> list[Run]:
        """Fill the run and task counts; the unfinished runs, read with their tasks."""
        self._retire({r.id for r in runs})
        totals: dict[str, Tally] = {}
        open_runs: list[Run] = []
        for summary in runs:
            snap.runs[(summary.workflow, summary.state.value)] += 1
            one = self._tally_one(summary, open_runs)
            if one is None:
                continue
            totals.setdefault(summary.workflow, Tally()).merge(one)
            if summary.state.terminal:
                snap.finished[(summary.workflow, summary.state.value)] += 1
        for workflow, retired in self._retired.items():
            totals.setdefault(workflow, Tally()).merge(retired)
        snap.finished.update(self._retired_runs)
        snap.tallies = totals
        return open_runs

    def _tally_one(self, summary: Run, open_runs: list[Run]) -> Tally | None:
        kept = self._kept.get(summary.id)
        if kept is not None and (kept.state, kept.finished_at) == (
            summary.state.value,
            summary.finished_at,
        ):
            return kept.tally
        try:
            run = self.store.get_run(summary.id, now=self.clock())
        except errors.RunNotFound:  # deleted by gc since it was listed
            return None
        one = tally(run)
        if run.state.terminal:
            self._kept[run.id] = _Kept(run.workflow, run.state.value, run.finished_at, one)
        else:
            self._kept.pop(run.id, None)
            open_runs.append(run)
        return one

    def _retire(self, present: set[str]) -> None:
        """Runs gone from the store (gc) keep their counts."""
        for run_id in [r for r in self._kept if r not in present]:
            kept = self._kept.pop(run_id)
            self._retired.setdefault(kept.workflow, Tally()).merge(kept.tally)
            self._retired_runs[(kept.workflow, kept.state)] += 1

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
