"""Backfill: start the runs of a schedule's ticks in a past (or future) range.

Each tick gets the run id and idempotency key the scheduler gives it (`fire.run_id_for`,
`cron:<name>:<stamp>`), so a tick that already has a run is skipped, and a backfill racing the
live scheduler (or another backfill) never duplicates a run: `Store.create_run` is
create-if-absent. The ticks are the ones `runner cron next` lists (`ticks.due_ticks`, the same
daylight-saving rules). The schedule's bookkeeping (`last_tick`, missed, skipped) is left alone.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from runner import engine, errors, planview
from runner.cron import fire, ticks
from runner.models import CronEntry, Run, RunState
from runner.store.base import Store

MAX_TICKS = 10_000  # ticks one backfill may start
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPSILON = 1e-6  # the range is inclusive at both ends


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What the backfill did with one tick."""

    tick: float
    run_id: str
    created: bool  # False: the tick already had a run (skipped)
    state: RunState | None = None  # the run's final state, when the backfill waited for it


def parse_bound(text: str, tz: str, *, end: bool) -> float:
    """`--from`/`--to` as epoch seconds: `YYYY-MM-DD` (a `--to` date means through the end of
    that day) or an ISO 8601 date and time; without an offset, in the schedule's time zone.
    Raises ValueError with a message to show."""
    zone = zoneinfo.ZoneInfo(tz)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    if end and _DATE.match(text):
        return (when + dt.timedelta(days=1)).timestamp() - _EPSILON
    return when.timestamp()


def ticks_between(entry: CronEntry, *, start: float, end: float) -> list[float]:
    """The schedule's ticks `t` with `start <= t <= end`, oldest first. Raises UsageError when
    the range is empty or holds more than MAX_TICKS ticks."""
    if end < start:
        raise errors.UsageError("cron backfill: --to is before --from")
    s = entry.schedule
    found = ticks.due_ticks(
        s.cron, s.timezone, since=start - _EPSILON, until=end, limit=MAX_TICKS + 1
    )
    if len(found) > MAX_TICKS:
        raise errors.UsageError(
            f"cron backfill: the range holds more than {MAX_TICKS} ticks; backfill it in parts"
        )
    return found


def submit_tick(store: Store, entry: CronEntry, tick: float, *, now: float) -> Result:
    """Create the tick's run as the scheduler would, unless it has one already."""
    run_id = fire.run_id_for(entry.name, tick)
    plan = planview.plan_from_json(entry.plan)
    key = f"cron:{entry.name}:{fire.stamp(tick)}"
    try:
        engine.submit(store, plan, now=now, run_id=run_id, key=key, scheduled_time=tick)
    except errors.RunExists:
        return Result(tick=tick, run_id=run_id, created=False)
    return Result(tick=tick, run_id=run_id, created=True)


def backfill(
    store: Store,
    entry: CronEntry,
    tick_list: list[float],
    *,
    clock: Callable[[], float],
    parallel: int,
    wait: Callable[[str], Run] | None = None,
    report: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    """Start each tick's run in order; with `wait` (follow a run to its end), keep at most
    `parallel` of the runs it started unfinished at once and return every run's final state.
    Ticks that already have a run are skipped (reported, not waited for)."""
    results: list[Result] = []
    active: list[int] = []  # indexes into results of runs not yet waited for
    for tick in tick_list:
        while wait is not None and len(active) >= parallel:
            results[active[0]] = _finished(results[active[0]], wait)
            report(results[active.pop(0)])
        result = submit_tick(store, entry, tick, now=clock())
        results.append(result)
        if result.created and wait is not None:
            active.append(len(results) - 1)
        else:
            report(result)
    for i in active:
        results[i] = _finished(results[i], wait)  # type: ignore[arg-type]
        report(results[i])
    return results


def _finished(result: Result, wait: Callable[[str], Run]) -> Result:
    run = wait(result.run_id)
    return Result(tick=result.tick, run_id=result.run_id, created=True, state=run.state)


def exit_code(results: list[Result]) -> int:
    """As `runner apply`'s: 1 when a run it waited for failed, else 5 when one was cancelled."""
    states = {r.state for r in results}
    if RunState.FAILED in states:
        return errors.EXIT_RUN_FAILED
    if RunState.CANCELLED in states:
        return errors.EXIT_CANCELLED
    return errors.EXIT_OK
