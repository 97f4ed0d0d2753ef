"""`runner cron ...` (schedules), `runner scheduler` and `runner serve`."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from runner import engine, errors, planview
from runner.cli import common, gc_cmds, output, run_cmds
from runner.cli.cron_apply import local_iso, next_fire_times
from runner.config import Settings
from runner.cron import fire
from runner.cron.retention import DEFAULT_OLDER_THAN
from runner.cron.scheduler import Scheduler
from runner.models import DISPATCH_STRATEGIES, CronEntry
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
    nxt.add_argument("--count", type=common.positive_int, default=10, metavar="N")
    _add_scheduler_parser(sub)
    _add_serve_parser(sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return errors.EXIT_USAGE


def _add_cron_list(group: Any) -> None:
    p = group.add_parser(
        "list",
        help="the schedules, their last run and next fire time",
        description="Name, schedule, time zone, suspended, last run and its state, next fire "
        "time, and the ticks missed (past the starting deadline) or skipped (Forbid).",
        epilog="examples:\n  runner cron list\n  runner cron list -o json | jq '.[].next'\n",
        formatter_class=_RAW,
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
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
    return common.open_settings_store(settings)


def entry_json(store: Store, entry: CronEntry, *, now: float) -> dict[str, Any]:
    """One schedule as `runner cron list -o json` shows it."""
    state = fire.last_run_state(store, entry)
    upcoming = [] if entry.suspended else next_fire_times(entry, now=now, count=1)
    s = entry.schedule
    return {
        "name": entry.name,
        "schedule": s.cron,
        "timezone": s.timezone,
        "suspended": entry.suspended,
        "concurrency_policy": s.concurrency_policy.value,
        "last_run": entry.last_run_id,
        "last_run_state": None if state is None else state.value,
        "next": output.iso(upcoming[0]) if upcoming else None,
        "missed": entry.missed,
        "skipped": entry.skipped,
        "source": entry.source,
    }


def cmd_cron_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        now = time.time()
        rows = [entry_json(store, e, now=now) for e in store.list_schedules()]
    finally:
        store.close()
    if args.output == "json":
        output.dump(rows, "json")
        return errors.EXIT_OK
    head = ("NAME", "SCHEDULE", "TIMEZONE", "SUSPENDED", "LAST RUN", "STATE", "NEXT", "MISSED")
    table = [head] + [_row(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return errors.EXIT_OK


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    missed = f"{r['missed']}" + (f" (+{r['skipped']} skipped)" if r["skipped"] else "")
    return (
        r["name"], r["schedule"], r["timezone"], "yes" if r["suspended"] else "no",
        r["last_run"] or "-", r["last_run_state"] or "-", r["next"] or "-", missed,
    )  # fmt: skip


def cmd_cron_trigger(args: argparse.Namespace, settings: Settings) -> int:
    store = _with_store(settings)
    try:
        entry = store.get_schedule(args.name)
        now = time.time()
        plan = planview.plan_from_json(entry.plan)
        run = engine.submit(
            store, plan, now=now, run_id=f"{engine.new_run_id(entry.name, now)}-manual",
            scheduled_time=now,
        )  # fmt: skip
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
        store.suspend_schedule(name, suspended=suspended, now=time.time())
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


# ---------------------------------------------------------------------- scheduler, serve


def _add_loop_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workflows",
        type=Path,
        metavar="DIR",
        help="keep the workflow files of DIR applied (new, changed and deleted files)",
    )
    p.add_argument(
        "--lease-ttl",
        type=common.positive_float,
        default=10.0,
        metavar="SECONDS",
        help="leadership lease: a standby takes over within this after the leader dies",
    )
    p.add_argument(
        "--dispatch",
        choices=list(DISPATCH_STRATEGIES),
        default="pull",
        help="how the leader hands ready tasks to workers (default pull: workers claim); "
        "a workflow's spec.dispatch overrides it",
    )
    p.add_argument(
        "--gc-older-than",
        type=gc_cmds.retention_arg,
        default=DEFAULT_OLDER_THAN,
        metavar="DURATION",
        help="while leading, delete finished runs older than this every hour "
        "(like `runner gc`; default 7d; 0 disables)",
    )


def _add_scheduler_parser(sub: Any) -> None:
    p = sub.add_parser(
        "scheduler",
        help="fire the schedules' due runs (several may run; one leads)",
        description="Fire due ticks of every schedule. Run several for high availability: one "
        "leads, the others stand by and take over within --lease-ttl when it dies. Each tick "
        "fires exactly once whatever happens to the schedulers. With --dispatch other than pull "
        "(or a workflow's spec.dispatch) the leader also assigns each ready task to a live "
        "worker: round_robin, random, least_load (running / capacity) or weighted (--weight).",
        epilog="examples:\n  runner scheduler --workflows workflows/\n"
        "  runner --store etcd://10.0.0.5:2379 scheduler --lease-ttl 5\n"
        "  runner scheduler --dispatch least_load\n"
        "  runner scheduler --gc-older-than 30d   # keep finished runs 30 days (0: forever)\n",
        formatter_class=_RAW,
    )
    _add_loop_flags(p)
    p.set_defaults(func=cmd_scheduler)


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="a scheduler and local workers in one process",
        description="Cron batches on one machine with nothing else to install: a scheduler and "
        "--workers local worker slots in one process, on the embedded store by default.",
        epilog="examples:\n  runner serve --workflows workflows/ --workers 4\n",
        formatter_class=_RAW,
    )
    _add_loop_flags(p)
    p.add_argument("--workers", type=common.positive_int, default=os.cpu_count() or 1)
    p.set_defaults(func=cmd_serve)


def _scheduler(args: argparse.Namespace, settings: Settings, store: Store) -> Scheduler:
    if args.workflows is not None and not args.workflows.is_dir():
        raise errors.UsageError(f"--workflows {args.workflows}: not a folder")
    candidate = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def report(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    return Scheduler(
        store,
        candidate=candidate,
        lease_ttl=args.lease_ttl,
        folder=args.workflows,
        report=report,
        dispatch_default=args.dispatch,
        gc_older_than=args.gc_older_than,
    )


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    common.wait_for_store(settings, who="scheduler")
    store = _with_store(settings)
    stop = threading.Event()
    try:
        scheduler = _scheduler(args, settings, store)
        print(f"scheduler {scheduler.candidate} on {settings.store}", file=sys.stderr, flush=True)
        _loop_until_signal(scheduler, stop)
    finally:
        store.close()
    return errors.EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    common.wait_for_store(settings, who="serve")
    store = _with_store(settings)
    worker = run_cmds.make_worker(settings, concurrency=args.workers, lease_ttl=None, name="serve")
    thread = threading.Thread(target=worker.run, name="serve-worker", daemon=True)
    try:
        scheduler = _scheduler(args, settings, store)
        thread.start()
        print(f"serving {settings.store}: scheduler and {args.workers} worker slot(s)",
              file=sys.stderr, flush=True)  # fmt: skip
        _loop_until_signal(scheduler, threading.Event())
    finally:
        if thread.is_alive():
            worker.drain(30.0)
            thread.join()
        worker.store.close()
        worker.executor.close()
        store.close()
    return errors.EXIT_OK


def _loop_until_signal(scheduler: Scheduler, stop: threading.Event) -> None:
    """Run the scheduler in a thread; Ctrl-C or SIGTERM stops it and it resigns.

    Waiting on an Event, not `Thread.join`: a signal that interrupts `join` can leave the thread
    looking finished while it still runs (CPython 3.11), and the store would close under its
    resignation.
    """
    done = threading.Event()

    def target() -> None:
        try:
            scheduler.run(stop)
        finally:
            done.set()

    threading.Thread(target=target, name="scheduler", daemon=True).start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        stop.set()
        done.wait()
