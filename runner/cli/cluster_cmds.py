"""`runner locks` and `runner worker drain NAME`: the cluster's locks and remote drains."""

from __future__ import annotations

import argparse
import time
from typing import Any

from runner import actions, errors, views
from runner.cli import common, output
from runner.config import Settings
from runner.models import LockInfo


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "locks",
        help="list mutexes and semaphores with their holders and waiters",
        description="Every mutex (a task's `mutex: NAME`) and semaphore (`semaphore: {name, "
        "limit}`) that is held or wanted: the attempts holding it and the queued tasks "
        "waiting for it. A lock is held under its holder's worker lease: it is released when "
        "the attempt finishes, or when the worker dies and its lease expires.",
        epilog="examples:\n  runner locks\n  runner locks -o json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="format")
    p.set_defaults(func=cmd_locks)


lock_json = views.lock_json  # the shape is shared with the web dashboard


def cmd_locks(args: argparse.Namespace, settings: Settings) -> int:
    try:
        store = common.open_existing_store(settings)
    except errors.NoStore:
        locks: list[LockInfo] = []
    else:
        try:
            locks = store.list_locks(now=time.time())
        finally:
            store.close()
    if args.output == "json":
        output.dump([lock_json(lock) for lock in locks], "json")
        return errors.EXIT_OK
    if not locks:
        print(common.empty_note("held or awaited locks", settings))
        return errors.EXIT_OK
    rows = output.table("LOCK", "HELD", "HOLDERS", "WAITERS")
    for lock in locks:
        holders = ", ".join(f"{h.run_id}/{h.task_id}@{h.worker_id}" for h in lock.holders)
        waiters = ", ".join(f"{r}/{t}" for r, t in lock.waiters)
        rows.add_row(lock.name, f"{len(lock.holders)}/{lock.limit}", holders or "-", waiters or "-")
    output.console().print(rows)
    return errors.EXIT_OK


def cmd_worker_drain(args: argparse.Namespace, settings: Settings) -> int:
    """Mark the live workers named NAME draining; exit 2 when none is live."""
    if not args.target:
        raise errors.UsageError("worker drain: give the NAME (or id) of the worker to drain")
    store = common.open_existing_store(settings)
    try:
        ids = actions.drain_worker(store, args.target, now=time.time())
    finally:
        store.close()
    for worker_id in ids:
        print(f"worker {worker_id} draining")
    return errors.EXIT_OK
