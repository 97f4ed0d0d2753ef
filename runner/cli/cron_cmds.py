"""`runner cron ...`: list, trigger, suspend, resume and delete schedules."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from runner import actions, errors, views
from runner.cli import common, output
from runner.cli.cron_apply import local_iso, next_fire_times
from runner.config import Settings

if TYPE_CHECKING:
    from runner.store import Store

_RAW = argparse.RawDescriptionHelpFormatter


def add_parsers(sub: Any) -> None:
    cron = sub.add_parser(
        "cron",
        help="list, trigger, suspend, resume and delete schedules",
        description="Schedules are registered by `runner apply FILE` on a workflow with "
        "spec.schedule, or kept applied from a folder by `runner scheduler --workflows DIR`.",
        epilog="examples:\n  runner cron list\n  runner cron next nightly-etl --count 10\n"
        "  runner cron trigger nightly-etl\n  runner cron suspend nightly-etl\n",
        formatter_class=_RAW,
    )
    cron.set_defaults(func=lambda args, settings: _usage(cron))
    group = cron.add_subparsers(dest="cron_command", metavar="COMMAND")
    _add_cron_list(group)
    _add_named(group, "trigger", "start one run of the schedule now", cmd_cron_trigger)
    _add_named(group, "suspend", "stop firing the schedule", cmd_cron_suspend)
    _add_named(group, "resume", "fire the schedule again from its next tick", cmd_cron_resume)
    _add_named(group, "delete", "remove the schedule (its runs stay)", cmd_cron_delete)
    nxt = _add_named(group, "next", "print the schedule's next fire times", cmd_cron_next)
    nxt.add_argument(
        "--count", type=common.positive_int, default=10, metavar="N", help="how many (10)"
    )
    _add_backfill(group)


BACKFILL_EPILOG = """\
Each tick in [--from, --to] gets the run the scheduler would give it (run id
NAME-cron-<UTC stamp>, idempotency key cron:NAME:<stamp>), so a tick that already has a run
is skipped and a backfill racing the scheduler never starts a tick twice. ${{ run.scheduled_time }}
is the tick. Dates without an offset are in the schedule's time zone; a --to date means
through the end of that day. Exit codes as `runner apply`'s: 0 every run it started
succeeded, 1 one failed, 5 one was cancelled (0 with --detach or --dry-run).

examples:
  runner cron backfill nightly-etl --from 2026-03-01 --to 2026-03-31
  runner cron backfill nightly-etl --from 2026-03-01 --to 2026-03-31 --parallel 4 --reverse
  runner cron backfill nightly-etl --from 2026-03-28T00:00 --to 2026-03-30T12:00 --dry-run
  runner cron backfill nightly-etl --from 2026-01-01 --to 2026-01-31 --detach
"""


def _add_backfill(group: Any) -> None:
    p = group.add_parser(
        "backfill",
        help="start the runs of the schedule's ticks in a date range",
        description="Start one run per tick of schedule NAME from --from to --to (inclusive).",
        epilog=BACKFILL_EPILOG,
        formatter_class=_RAW,
    )
    p.add_argument("name", metavar="NAME", help="the schedule (its workflow's name)")
    p.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="the first tick's date"
    )
    p.add_argument(
        "--to", dest="end", required=True, metavar="DATE", help="the last date (inclusive)"
    )
    p.add_argument(
        "--parallel",
        type=common.positive_int,
        default=1,
        metavar="N",
        help="at most N of its runs unfinished at once (default 1)",
    )
    p.add_argument("--reverse", action="store_true", help="newest tick first")
    p.add_argument("--dry-run", action="store_true", help="print the ticks; start nothing")
    p.add_argument("--detach", action="store_true", help="store every run, print their ids")
    common.add_local_worker_flags(p)
    p.set_defaults(func=cmd_cron_backfill, prefetch=0)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return errors.EXIT_USAGE


def _add_cron_list(group: Any) -> None:
    p = group.add_parser(
        "list",
        help="the schedules, their last run and next fire time",
        description="Name, schedule, time zone, suspended, last run and its state, next fire "
        "time (in the schedule's time zone, like `runner cron next`; -o json also gives it in "
        "UTC), and the ticks missed (past the starting deadline) or skipped (Forbid).",
        epilog="examples:\n  runner cron list\n  runner cron list -o json | jq '.[].next'\n",
        formatter_class=_RAW,
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="format")
    p.set_defaults(func=cmd_cron_list)


def _add_named(group: Any, name: str, text: str, func: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(
        name,
        help=text,
        description=f"{text[0].upper()}{text[1:]}.",
        epilog=f"examples:\n  runner cron {name} nightly-etl\n",
        formatter_class=_RAW,
    )
    p.add_argument("name", metavar="NAME", help="the schedule (its workflow's name)")
    p.set_defaults(func=func)
    return p


def _with_store(settings: Settings) -> Store:
    return common.open_existing_store(settings)  # never creates a store


entry_json = views.entry_json  # the shape is shared with the web dashboard


def cmd_cron_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        store = _with_store(settings)
    except errors.NoStore:
        rows: list[dict[str, Any]] = []
    else:
        try:
            now = time.time()
            rows = [entry_json(store, e, now=now) for e in store.list_schedules()]
        finally:
            store.close()
    if args.output == "json":
        output.dump(rows, "json")
        return errors.EXIT_OK
    if not rows:
        print(common.empty_note("schedules", settings))
        return errors.EXIT_OK
    head = ("NAME", "SCHEDULE", "TIMEZONE", "SUSPENDED", "LAST RUN", "STATE", "NEXT", "MISSED")
    table = [head] + [_row(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return errors.EXIT_OK


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    missed = f"{r['missed']}" + (f" (+{r['skipped']} skipped)" if r["skipped"] else "")
    suspended = "yes" if r["suspended"] else "no"
    last = (r["last_run"] or "-", r["last_run_state"] or "-")
    nxt = r["next_local"] or "-"  # in the schedule's zone, like `runner cron next`
    return (r["name"], r["schedule"], r["timezone"], suspended, *last, nxt, missed)


def cmd_cron_trigger(args: argparse.Namespace, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        run = actions.trigger_schedule(store, args.name, now=time.time())
    finally:
        store.close()
    print(run.id)
    return errors.EXIT_OK


def cmd_cron_suspend(args: argparse.Namespace, settings: Settings) -> int:
    return _set_suspended(args.name, True, settings)


def cmd_cron_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _set_suspended(args.name, False, settings)


def _set_suspended(name: str, suspended: bool, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        actions.suspend_schedule(store, name, suspended=suspended, now=time.time())
    finally:
        store.close()
    print(f"schedule {name} {'suspended' if suspended else 'resumed'}")
    return errors.EXIT_OK


def cmd_cron_delete(args: argparse.Namespace, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        store.delete_schedule(args.name)
    finally:
        store.close()
    print(f"schedule {args.name} deleted")
    return errors.EXIT_OK


def cmd_cron_next(args: argparse.Namespace, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        entry = store.get_schedule(args.name)
    finally:
        store.close()
    for tick in next_fire_times(entry, now=time.time(), count=args.count):
        print(local_iso(tick, entry.schedule.timezone))
    return errors.EXIT_OK


def _backfill_ticks(store: Store, args: argparse.Namespace) -> tuple[Any, list[float]]:
    from runner.cron import backfill

    entry = store.get_schedule(args.name)
    tz = entry.schedule.timezone
    bounds = []
    for flag, text, end in (("--from", args.start, False), ("--to", args.end, True)):
        try:
            bounds.append(backfill.parse_bound(text, tz, end=end))
        except ValueError as exc:
            raise errors.UsageError(f"cron backfill {flag}: {exc}") from None
    found = backfill.ticks_between(entry, start=bounds[0], end=bounds[1])
    return entry, found[::-1] if args.reverse else found


def cmd_cron_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from runner.cron import backfill

    store = _with_store(settings)
    try:
        entry, ticks = _backfill_ticks(store, args)
        tz = entry.schedule.timezone
        if args.dry_run:
            for tick in ticks:
                print(local_iso(tick, tz))
            print(f"{len(ticks)} tick(s); nothing started (--dry-run)", file=sys.stderr)
            return errors.EXIT_OK

        def report(r: backfill.Result) -> None:
            state = "exists, skipped" if not r.created else (r.state or "stored")
            print(f"{local_iso(r.tick, tz)}  {r.run_id}  {state}", flush=True)

        if args.detach:
            backfill.backfill(store, entry, ticks, clock=time.time, parallel=1, report=report)
            return errors.EXIT_OK
        return _backfill_and_wait(store, entry, ticks, args, settings, report)
    finally:
        store.close()


def _backfill_and_wait(
    store: Store,
    entry: Any,
    ticks: list[float],
    args: argparse.Namespace,
    settings: Settings,
    report: Any,
) -> int:
    from runner import engine
    from runner.cli import run_cmds
    from runner.cron import backfill

    local = run_cmds._LocalWorkers.start(args, settings)
    try:
        results = backfill.backfill(
            store,
            entry,
            ticks,
            clock=time.time,
            parallel=args.parallel,
            wait=lambda run_id: engine.follow(store, run_id, tasks=False),
            report=report,
        )
    except BaseException:
        local.stop(abort_run=None)
        raise
    local.stop(abort_run=None)
    return backfill.exit_code(results)
