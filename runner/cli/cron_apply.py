"""`runner apply` on a workflow with `spec.schedule`: register it, print its next fire times."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner import errors, planview, views
from runner.cron import fire
from runner.models import Plan

if TYPE_CHECKING:
    from runner.store import Store

SHOWN = 3  # fire times `runner apply` prints


local_iso = views.local_iso


next_fire_times = views.next_fire_times


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "none"


def conflict(store: Store, plan: Plan) -> str | None:
    """Why registering the plan's schedule would silently take over another one: the name
    is registered from another file, or with other params (params are part of a registered
    schedule: its runs use them). None when it would not."""
    try:
        entry = store.get_schedule(plan.workflow)
    except errors.ScheduleNotFound:
        return None
    new = fire.entry_for(plan).source
    if entry.source and new and entry.source != new:
        return (
            f"schedule {entry.name} is registered from {entry.source}, and {new} claims the "
            f"same name (metadata.name); rename one of them, or pass --force to move the "
            f"schedule to {new}"
        )
    registered = planview.plan_from_json(entry.plan).params
    if registered != plan.params:
        return (
            f"schedule {entry.name} is registered with params {_params(registered)}, not "
            f"{_params(plan.params)}; its runs use the registered ones: pass --force to replace "
            f"them (with --now, the one run started now uses the ones given)"
        )
    return None


def register_and_describe(
    store: Store, plan: Plan, *, now: float, force: bool = False, now_run: bool = False
) -> list[str]:
    """Register or update the plan's schedule; the lines `runner apply` prints. Raises
    UsageError when that would take another file's schedule over, or replace its params,
    without `force` (with `now_run` and other params only, the schedule stays as it is)."""
    why = None if force else conflict(store, plan)
    if why is not None:
        if not now_run or why.startswith(f"schedule {plan.workflow} is registered from"):
            raise errors.UsageError(why)
        entry = store.get_schedule(plan.workflow)
        return [
            f"schedule {entry.name} unchanged: registered with params "
            f"{_params(planview.plan_from_json(entry.plan).params)} (--force replaces them)"
        ]
    changed = fire.register(store, plan, now=now)
    entry = store.get_schedule(plan.workflow)
    verb = "registered" if entry.created_at == now else "updated" if changed else "unchanged"
    s = entry.schedule
    state = " (suspended)" if entry.suspended else ""
    lines = [f"schedule {entry.name} {verb}: {s.cron!r} in {s.timezone}{state}"]
    lines += [
        f"  next: {local_iso(t, s.timezone)}" for t in next_fire_times(entry, now=now, count=SHOWN)
    ]
    return lines
