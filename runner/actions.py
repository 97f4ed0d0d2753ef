"""What an operator does to runs, schedules and workers: the one implementation behind the
CLI's commands and the web dashboard's buttons."""

from __future__ import annotations

from runner import engine, errors, planview
from runner.models import CronEntry, Run
from runner.store.base import Store


def cancel_run(store: Store, ref: str, *, now: float) -> Run:
    """`runner cancel RUN`. Raises RunNotFound."""
    return store.cancel_run(engine.resolve_run_id(store, ref), now=now)


def retry_run(store: Store, ref: str, *, now: float, dry_run: bool = False) -> list[str]:
    """`runner retry RUN --detach`: the task ids that re-run. Raises RunNotFound, UsageError."""
    return store.retry_run(engine.resolve_run_id(store, ref), now=now, dry_run=dry_run)


def trigger_schedule(store: Store, name: str, *, now: float) -> Run:
    """`runner cron trigger NAME`: one run of the schedule's plan now, outside its ticks.
    Raises ScheduleNotFound."""
    entry = store.get_schedule(name)
    plan = planview.plan_from_json(entry.plan)
    run_id = f"{engine.new_run_id(entry.name, now)}-manual"
    return engine.submit(store, plan, now=now, run_id=run_id, scheduled_time=now)


def suspend_schedule(store: Store, name: str, *, suspended: bool, now: float) -> CronEntry:
    """`runner cron suspend|resume NAME`. Raises ScheduleNotFound."""
    return store.suspend_schedule(name, suspended=suspended, now=now)


def drain_worker(store: Store, name: str, *, now: float) -> list[str]:
    """`runner worker drain NAME`: the ids marked draining. Raises UsageError when no live
    worker has that name or id."""
    ids = store.drain_worker(name, now=now)
    if not ids:
        raise errors.UsageError(
            f"worker drain: no live worker is named {name!r}; see `runner workers`"
        )
    return ids
