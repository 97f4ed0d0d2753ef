"""Time expressions: durations, cron schedules and IANA time zones; the one home of `croniter`.

A schedule is 5 cron fields, 6 fields with seconds first, a macro (`@hourly`, `@daily`,
`@weekly`, `@monthly`, `@yearly`, `@annually`, `@midnight`) or `@every <duration>`, whose ticks
are the multiples of the duration since the epoch. `next_times` is pure: it takes the time to
count from, so the scheduler's tests need no clock. croniter loads with the first cron schedule:
a workflow without one does not pay for it (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = "@every"
MAX_DURATION = 366 * 86400.0 * 100  # a century: anything longer is a typo


def parse_duration(value: object) -> float:
    """`500ms`, `2s`, `5m`, `1h30m`, `1d` or a number of seconds -> seconds; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_units(value)
    else:
        raise ValueError(f"{value!r} is not a duration; use 500ms, 2s, 5m, 1h30m or seconds")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION:
        raise ValueError(f"{value!r} is out of range (0 to 100 years)")
    return seconds


def _parse_units(text: str) -> float:
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{text!r} is not a duration; use 500ms, 2s, 5m, 1h30m or seconds")
    return total


def check_timezone(name: str) -> str | None:
    """None when `name` is a known IANA time zone, else what is wrong."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
    return None


def check_schedule(expr: str) -> str | None:
    """None when `expr` is a valid schedule, else what is wrong."""
    text = expr.strip()
    if text.startswith(_EVERY):
        try:
            seconds = parse_duration(text[len(_EVERY) :].strip())
        except ValueError as exc:
            return f"{expr!r}: {exc}"
        return None if seconds >= 1 else f"{expr!r}: the interval must be at least 1s"
    if text.startswith("@"):
        if text in _MACROS:
            return None
        return f"unknown schedule macro {text!r}; use one of {', '.join(sorted(_MACROS))}"
    fields = text.split()
    if len(fields) not in (5, 6):
        return f"{expr!r} has {len(fields)} fields; a cron schedule has 5, or 6 with seconds first"
    import croniter

    try:
        croniter.croniter(text, 0.0, second_at_beginning=True).get_next(float)
    except croniter.CroniterBadDateError:
        return f"cron schedule {expr!r} never fires"
    except (croniter.CroniterError, ValueError, KeyError, TypeError, OverflowError) as exc:
        return f"invalid cron schedule {expr!r}: {_bad_field(fields) or exc}"
    return None


_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat, 0 and 7 are Sunday"),
)


def _bad_field(fields: list[str]) -> str | None:
    """Which field of a rejected schedule is at fault, with its range, tried one at a time."""
    import croniter

    named = ((("second", "0-59"),) if len(fields) == 6 else ()) + _FIELDS
    for i, (name, allowed) in enumerate(named):
        probe = ["*"] * len(fields)
        probe[i] = fields[i]
        try:
            croniter.croniter(" ".join(probe), 0.0, second_at_beginning=True).get_next(float)
        except (croniter.CroniterError, ValueError, KeyError, TypeError, OverflowError):
            return f"the {name} field {fields[i]!r} is not valid; it takes {allowed}"
    return None


def next_times(expr: str, tz: str, after: float, count: int) -> list[float]:
    """The `count` tick times (epoch seconds) of a valid schedule strictly after `after`."""
    text = _MACROS.get(expr.strip(), expr.strip())
    if text.startswith(_EVERY):
        step = parse_duration(text[len(_EVERY) :].strip())
        first = (math.floor(after / step) + 1) * step
        return [first + i * step for i in range(count)]
    start = dt.datetime.fromtimestamp(after, zoneinfo.ZoneInfo(tz))
    import croniter

    it = croniter.croniter(text, start, second_at_beginning=True)
    return [float(it.get_next(float)) for _ in range(count)]


def prev_time(expr: str, tz: str, at: float) -> float:
    """The latest tick time (epoch seconds) of a valid schedule at or before `at`."""
    text = _MACROS.get(expr.strip(), expr.strip())
    if text.startswith(_EVERY):
        step = parse_duration(text[len(_EVERY) :].strip())
        return math.floor(at / step) * step
    # cron ticks fall on whole seconds and get_prev is strictly before its start
    start = dt.datetime.fromtimestamp(math.floor(at) + 1, zoneinfo.ZoneInfo(tz))
    import croniter

    it = croniter.croniter(text, start, second_at_beginning=True)
    return float(it.get_prev(float))


def hour_field(expr: str) -> str | None:
    """The hour field of a cron schedule after macro expansion; None for `@every`."""
    text = _MACROS.get(expr.strip(), expr.strip())
    if text.startswith(_EVERY):
        return None
    fields = text.split()
    return fields[2] if len(fields) == 6 else fields[1]
