"""The cluster series of docs/METRICS.md as metric families, built from one `Snapshot`.

Labels are bounded: workflow, state, schedule, worker (the name given with `--name`, not the
per-process id), lock and priority band. Never a run or task id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from runner.metrics.tally import Hist

if TYPE_CHECKING:
    from runner.metrics.cluster import Snapshot


def cluster(snap: Snapshot, *, describe: bool = False) -> Iterator[Metric]:
    """Every cluster family; only `runner_store_up` when the store could not be read."""
    yield GaugeMetricFamily(
        "runner_store_up",
        "1 when the last read of the store for metrics succeeded, else 0",
        value=None if describe else float(snap.ok),
    )
    if not snap.ok:
        return
    yield GaugeMetricFamily(
        "runner_metrics_read_seconds",
        "How long the last read of the store for metrics took",
        value=None if describe else snap.read_seconds,
    )
    yield from _runs(snap)
    yield from _tasks(snap)
    yield from _queue(snap)
    yield from _workers(snap)
    yield from _schedules(snap)
    yield from _locks(snap)
    yield from _leader(snap, describe=describe)


def _runs(snap: Snapshot) -> Iterator[Metric]:
    now = GaugeMetricFamily(
        "runner_runs",
        "Runs in the store by state (finished runs stay until gc)",
        labels=["workflow", "state"],
    )
    for (workflow, state), n in sorted(snap.runs.items()):
        now.add_metric([workflow, state], n)
    yield now
    done = CounterMetricFamily(
        "runner_runs_finished", "Runs that ended, by final state", labels=["workflow", "state"]
    )
    for (workflow, state), n in sorted(snap.finished.items()):
        done.add_metric([workflow, state], n)
    yield done


def _tasks(snap: Snapshot) -> Iterator[Metric]:
    done = CounterMetricFamily(
        "runner_tasks_finished",
        "Tasks that reached a final state, by state",
        labels=["workflow", "state"],
    )
    lost = CounterMetricFamily(
        "runner_attempts_lost",
        "Attempts lost with a dead worker (lease expired)",
        labels=["workflow"],
    )
    retried = CounterMetricFamily(
        "runner_task_retries", "Attempts started after a failed attempt", labels=["workflow"]
    )
    duration = HistogramMetricFamily(
        "runner_task_duration_seconds",
        "Duration of attempts that ran to an end",
        labels=["workflow"],
    )
    wait = HistogramMetricFamily(
        "runner_task_ready_to_claimed_seconds",
        "Time from a task becoming ready to its latest attempt's start",
        labels=["workflow"],
    )
    for workflow, t in sorted(snap.tallies.items()):
        for state, n in sorted(t.tasks.items()):
            done.add_metric([workflow, state], n)
        lost.add_metric([workflow], t.losses)
        retried.add_metric([workflow], t.retries)
        _hist(duration, [workflow], t.duration)
        _hist(wait, [workflow], t.wait)
    yield from (done, lost, retried, duration, wait)


def _hist(family: HistogramMetricFamily, labels: list[str], h: Hist) -> None:
    family.add_metric(labels, h.cumulative(), h.total)


def _queue(snap: Snapshot) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "runner_queue_depth",
        "Queued tasks (ready, or retrying after a backoff) by priority band",
        labels=["band", "state"],
    )
    oldest = GaugeMetricFamily(
        "runner_queue_oldest_seconds",
        "How long the longest-waiting claimable task of the band has been ready (0: none)",
        labels=["band"],
    )
    counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    ages: dict[str, float] = {b: 0.0 for b in ("high", "normal", "low")}
    for q in snap.queue:
        counts[(q.band, q.state)] += 1
        if q.ready_at <= snap.now:
            ages[q.band] = max(ages[q.band], snap.now - q.ready_at)
    for band in ("high", "normal", "low"):
        for state in ("ready", "retrying"):
            depth.add_metric([band, state], counts[(band, state)])
        oldest.add_metric([band], ages[band])
    yield from (depth, oldest)


def _workers(snap: Snapshot) -> Iterator[Metric]:
    live = GaugeMetricFamily(
        "runner_workers", "Live workers (lease not expired)", value=len(snap.workers)
    )
    draining = GaugeMetricFamily(
        "runner_workers_draining",
        "Live workers that are draining",
        value=sum(w.draining for w in snap.workers),
    )
    total = GaugeMetricFamily(
        "runner_worker_slots",
        "Slots (--concurrency) of the live workers of each name",
        labels=["worker"],
    )
    busy = GaugeMetricFamily(
        "runner_worker_busy_slots",
        "Attempts the live workers of each name own (running or held)",
        labels=["worker"],
    )
    slots: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for w in snap.workers:
        slots[w.name][0] += w.capacity
        slots[w.name][1] += w.running
    for name, (capacity, running) in sorted(slots.items()):
        total.add_metric([name], capacity)
        busy.add_metric([name], running)
    yield from (live, draining, total, busy)


def _schedules(snap: Snapshot) -> Iterator[Metric]:
    def gauge(name: str, text: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=["schedule"])

    success = gauge(
        "runner_schedule_last_success_timestamp_seconds",
        "When the schedule's latest succeeded run ended (0: none seen)",
    )
    failure = gauge(
        "runner_schedule_last_failure_timestamp_seconds",
        "When the schedule's latest failed run ended (0: none seen)",
    )
    created = gauge("runner_schedule_created_timestamp_seconds", "When the schedule was created")
    period = gauge("runner_schedule_period_seconds", "Seconds between its next two ticks")
    suspended = gauge("runner_schedule_suspended", "1 while the schedule is suspended")
    missed = CounterMetricFamily(
        "runner_schedule_missed_ticks",
        "Ticks never fired (past the starting deadline, or not the latest)",
        labels=["schedule"],
    )
    skipped = CounterMetricFamily(
        "runner_schedule_skipped_ticks",
        "Ticks not fired because the previous run was active (Forbid)",
        labels=["schedule"],
    )
    for s in snap.schedules:
        name = [s.entry.name]
        success.add_metric(name, s.last_success)
        failure.add_metric(name, s.last_failure)
        created.add_metric(name, s.entry.created_at)
        period.add_metric(name, s.period)
        suspended.add_metric(name, float(s.entry.suspended))
        missed.add_metric(name, s.entry.missed)
        skipped.add_metric(name, s.entry.skipped)
    yield from (success, failure, created, period, suspended, missed, skipped)


def _locks(snap: Snapshot) -> Iterator[Metric]:
    holders = GaugeMetricFamily("runner_lock_holders", "Attempts holding the lock", labels=["lock"])
    waiters = GaugeMetricFamily(
        "runner_lock_waiters", "Queued tasks waiting for the lock", labels=["lock"]
    )
    limit = GaugeMetricFamily(
        "runner_lock_limit", "Holders the lock admits (1 for a mutex)", labels=["lock"]
    )
    for lock in snap.locks:
        holders.add_metric([lock.name], len(lock.holders))
        waiters.add_metric([lock.name], len(lock.waiters))
        limit.add_metric([lock.name], lock.limit)
    yield from (holders, waiters, limit)


def _leader(snap: Snapshot, *, describe: bool) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "runner_scheduler_leader_present",
        "1 while some scheduler holds the leadership",
        value=None if describe else float(snap.leader is not None),
    )
    if snap.candidate is not None:
        yield GaugeMetricFamily(
            "runner_scheduler_leading",
            "1 while this scheduler process leads",
            value=None if describe else float(snap.leader == snap.candidate),
        )
