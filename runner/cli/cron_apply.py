"""`runner apply` on a workflow with `spec.schedule`: register it, print its next fire times."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import TYPE_CHECKING

from runner import views
from runner.cron import fire
from runner.models import Plan

if TYPE_CHECKING:
    from runner.store import Store

SHOWN = 3  # fire times `runner apply` prints


def local_iso(ts: float, tz: str) -> str:
    """Epoch seconds as ISO 8601 in the schedule's time zone, to the second."""
    return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz)).isoformat(timespec="seconds")


next_fire_times = views.next_fire_times


def register_and_describe(store: Store, plan: Plan, *, now: float) -> list[str]:
    """Register or update the plan's schedule; the lines `runner apply` prints."""
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
