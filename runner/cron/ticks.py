"""Tick computation, pure: which ticks of a schedule are due, fire or are missed at a given time.

Nothing here reads a clock: every function takes the times it works on, so tests drive it with
any `now`. Cron expressions are evaluated through `runner.cronexpr` (croniter's one home) in the
schedule's IANA time zone.

Daylight-saving time (documented in docs/CRON.md):
- spring forward: a wall-clock time inside the skipped hour fires once, at the first valid time
  after the gap (a daily 02:30 job in Europe/Berlin runs at 03:00 that day); a job whose hour
  field is `*` has no tick in the missing hour (an hourly job runs 23 times that day);
- fall back: a wall-clock time in the repeated hour fires once, at its first occurrence, unless
  the hour field starts with `*` (then every real hour has its tick: 25 that day);
- `@every` durations count real seconds since the epoch and ignore time zones.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass

from runner import cronexpr
from runner.models import Schedule

MAX_COUNT = 10_000  # ticks counted as missed in one step: a longer outage saturates the count
MAX_CATCHUP = 100  # `catchup: all` fires at most this many ticks per step, oldest first


def _keep(expr: str, tz: str, tick: float) -> bool:
    """False for the second occurrence of a repeated wall-clock time (fall back) when the
    schedule names its hours: the job ran at the first occurrence."""
    hours = cronexpr.hour_field(expr)
    if hours is None or hours.startswith("*"):
        return True
    return dt.datetime.fromtimestamp(tick, zoneinfo.ZoneInfo(tz)).fold == 0


def due_ticks(
    expr: str, tz: str, *, since: float, until: float, limit: int = MAX_COUNT
) -> list[float]:
    """The ticks `t` with `since < t <= until`, oldest first, at most `limit` of them."""
    out: list[float] = []
    after = since
    while len(out) < limit:
        batch = cronexpr.next_times(expr, tz, after, min(64, limit - len(out) + 2))
        for tick in batch:
            if tick > until or len(out) >= limit:
                return out
            if _keep(expr, tz, tick):
                out.append(tick)
        after = batch[-1]
    return out


def count_ticks(expr: str, tz: str, *, since: float, until: float) -> int:
    """How many ticks fall in `(since, until]` (at most MAX_COUNT for cron expressions)."""
    if until <= since:
        return 0
    if cronexpr.hour_field(expr) is None:  # @every: arithmetic, any span
        step = cronexpr.next_times(expr, tz, 0.0, 2)
        width = step[1] - step[0]
        return max(0, math.floor(until / width) - math.floor(since / width))
    return len(due_ticks(expr, tz, since=since, until=until))


def next_ticks(expr: str, tz: str, *, after: float, count: int) -> list[float]:
    """The next `count` ticks strictly after `after` (what `runner cron next` prints)."""
    out: list[float] = []
    while len(out) < count:
        batch = cronexpr.next_times(expr, tz, after, count - len(out) + 2)
        out.extend(t for t in batch if _keep(expr, tz, t))
        after = batch[-1]
    return out[:count]


def latest_tick(expr: str, tz: str, *, at: float) -> float:
    """The latest tick at or before `at` that fires (DST repeats skipped)."""
    tick = cronexpr.prev_time(expr, tz, at)
    while not _keep(expr, tz, tick):
        tick = cronexpr.prev_time(expr, tz, tick - 1)
    return tick


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """What a scheduler does for one schedule at `now`."""

    fire: tuple[float, ...] = ()  # ticks to fire, oldest first
    missed: int = 0  # ticks that will never fire: before the starting deadline, or not latest
    last: float | None = None  # the latest tick decided on (fired or missed); None: nothing due


def decide(schedule: Schedule, *, since: float, now: float) -> Due:
    """The ticks in `(since, now]` to fire and how many are missed.

    The window of ticks that may still fire is `(now - startingDeadlineSeconds, now]` (all of
    `(since, now]` without a deadline). With `catchup: latest` only the newest tick in the
    window fires and every other due tick is missed; with `catchup: all` every tick in the
    window fires, oldest first (at most MAX_CATCHUP per step; the rest fire on the next steps),
    and the ticks before the window are missed.
    """
    expr, tz = schedule.cron, schedule.timezone
    newest = latest_tick(expr, tz, at=now)
    if newest <= since:
        return Due()
    start = (
        since
        if schedule.starting_deadline is None
        else max(since, now - schedule.starting_deadline)
    )
    before = count_ticks(expr, tz, since=since, until=start)
    if schedule.catchup == "all":
        fire = due_ticks(expr, tz, since=start, until=now, limit=MAX_CATCHUP)
        last = fire[-1] if fire else newest
        return Due(fire=tuple(fire), missed=before, last=last)
    if newest > start:
        inside = count_ticks(expr, tz, since=start, until=now)
        return Due(fire=(newest,), missed=before + inside - 1, last=newest)
    return Due(missed=before, last=newest)
