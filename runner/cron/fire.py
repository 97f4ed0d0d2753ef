"""Registering schedules and firing their due ticks: exactly once per (schedule, tick).

A tick's run id derives from the schedule and the tick (`<workflow>-cron-<UTC stamp>`) and is
created with the idempotency key `cron:<name>:<stamp>`; `Store.create_run` is create-if-absent,
so a second scheduler (a new leader, a paused old leader waking up, a clock that jumped back)
gets `RunExists` and fires nothing. The bookkeeping (`Store.record_tick`) only moves forward.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner import engine, errors, planview
from runner.cron import ticks
from runner.models import ConcurrencyPolicy, CronEntry, Plan, RunState
from runner.store.base import Store

logger = logging.getLogger(__name__)


def stamp(tick: float) -> str:
    """`yyyymmddThhmmss` in UTC, with milliseconds when the tick is not a whole second."""
    text = time.strftime("%Y%m%dT%H%M%S", time.gmtime(math.floor(tick)))
    millis = round((tick - math.floor(tick)) * 1000)
    return f"{text}.{millis:03d}" if millis else text


def run_id_for(name: str, tick: float) -> str:
    """The run id of a schedule's tick: the same on every scheduler."""
    return f"{name}-cron-{stamp(tick)}"


def entry_for(plan: Plan) -> CronEntry:
    """The schedule entry `runner apply` registers for a plan with a `spec.schedule`."""
    if plan.schedule is None:
        raise errors.UsageError(f"{plan.source or plan.workflow}: the workflow has no schedule")
    source = str(Path(plan.source).resolve()) if plan.source else ""
    return CronEntry(
        name=plan.workflow,
        plan=planview.plan_to_json(plan),
        plan_hash=plan.hash,
        schedule=plan.schedule,
        source=source,
    )


def register(store: Store, plan: Plan, *, now: float) -> bool:
    """Register or update the plan's schedule; True when the store changed."""
    return store.put_schedule(entry_for(plan), now=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fired:
    """What happened to one tick."""

    tick: float
    run_id: str | None  # None: skipped (Forbid)
    created: bool = False  # False: another scheduler had already fired it


def _active(store: Store, run_id: str | None) -> bool:
    if run_id is None:
        return False
    try:
        return not store.get_run(run_id, tasks=False).state.terminal
    except errors.RunNotFound:
        return False


def _log(text: str) -> None:
    logger.info("%s", text)


def fire_tick(
    store: Store,
    entry: CronEntry,
    tick: float,
    *,
    now: float,
    report: Callable[[str], None] = _log,
) -> Fired:
    """Start the run of one tick under the schedule's concurrency policy; `report` gets one
    line for a fired or skipped tick (none when another scheduler fired it first)."""
    run_id = run_id_for(entry.name, tick)
    policy = entry.schedule.concurrency_policy
    previous = entry.last_run_id
    at = f"schedule {entry.name}: tick {iso(tick)}"
    if policy is not ConcurrencyPolicy.ALLOW and previous != run_id and _active(store, previous):
        if policy is ConcurrencyPolicy.FORBID:
            report(f"{at} skipped: run {previous} is still active (concurrencyPolicy Forbid)")
            return Fired(tick=tick, run_id=None)
        assert previous is not None
        store.cancel_run(previous, now=now, reason=f"replaced by {run_id}")
        report(f"{at}: run {previous} cancelled, replaced (concurrencyPolicy Replace)")
    plan = planview.plan_from_json(entry.plan)
    try:
        key = f"cron:{entry.name}:{stamp(tick)}"
        engine.submit(store, plan, now=now, run_id=run_id, key=key, scheduled_time=tick)
    except errors.RunExists:
        return Fired(tick=tick, run_id=run_id)
    report(f"{at} fired as run {run_id}")
    return Fired(tick=tick, run_id=run_id, created=True)


def iso(tick: float) -> str:
    """A tick as ISO 8601 UTC to the second (`2026-01-01T02:00:00Z`), for report lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick))


def fire_due(
    store: Store, entry: CronEntry, *, now: float, report: Callable[[str], None] = _log
) -> list[Fired]:
    """Fire the schedule's due ticks at `now` and record them (missed and skipped counted);
    `report` gets one line per fired, skipped or missed tick."""
    if entry.suspended:
        return []
    due = ticks.decide(entry.schedule, since=entry.last_tick, now=now)
    fired: list[Fired] = []
    missed = due.missed
    if missed:
        report(
            f"schedule {entry.name}: {missed} tick(s) missed (past startingDeadlineSeconds, "
            f"or passed over by catchup: {entry.schedule.catchup})"
        )
    for tick in due.fire:
        result = fire_tick(store, entry, tick, now=now, report=report)
        fired.append(result)
        skipped = int(result.run_id is None)
        store.record_tick(
            entry.name, tick=tick, run_id=result.run_id, missed=missed, skipped=skipped
        )
        missed = 0
        if result.run_id is not None:
            entry = _with_last_run(entry, result.run_id)
    if missed and due.last is not None:
        store.record_tick(entry.name, tick=due.last, missed=missed)
    return fired


def _with_last_run(entry: CronEntry, run_id: str) -> CronEntry:
    return dataclasses.replace(entry, last_run_id=run_id)


def last_run_state(store: Store, entry: CronEntry) -> RunState | None:
    """The state of the schedule's latest run, None when it has none (or it was deleted)."""
    if entry.last_run_id is None:
        return None
    try:
        return store.get_run(entry.last_run_id, tasks=False).state
    except errors.RunNotFound:
        return None
