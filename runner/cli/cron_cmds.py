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
