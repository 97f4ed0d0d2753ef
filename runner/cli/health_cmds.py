"""`runner health`: is this host's worker or scheduler live in the store (a HEALTHCHECK)."""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

from runner import errors
from runner.cli import common
from runner.config import Settings
from runner.models import WorkerInfo

EXIT_UNHEALTHY = 1  # what a container HEALTHCHECK takes for "unhealthy" (2 is reserved)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "health",
        help="exit 0 when this host's worker or scheduler is live in the store",
        description="A health check for containers and service managers. Healthy (exit 0) when "
        "the store answers and: with --worker NAME, a live worker named NAME is registered; "
        "with --scheduler, a scheduler holds the leadership; without either, a live worker of "
        "this host is registered, or else a scheduler leads. Unhealthy: exit 1 and the reason "
        "on stderr.",
        epilog="examples:\n  runner health\n  runner health --worker gpu-1\n"
        "  runner health --scheduler\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--worker", metavar="NAME", help="check the live worker named NAME")
    p.add_argument("--scheduler", action="store_true", help="check that a scheduler leads")
    p.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    try:
        store = common.open_settings_store(settings)
        try:
            now = time.time()
            workers = store.list_workers(now=now)
            leader = store.leader(now=now)
        finally:
            store.close()
    except errors.StoreUnavailable as exc:
        print(f"unhealthy: {exc.message}", file=sys.stderr)
        return EXIT_UNHEALTHY
    healthy, reason = verdict(
        workers, leader, worker=args.worker, scheduler=args.scheduler, host=socket.gethostname()
    )
    print(
        f"{'healthy' if healthy else 'unhealthy'}: {reason}",
        file=sys.stdout if healthy else sys.stderr,
    )
    return errors.EXIT_OK if healthy else EXIT_UNHEALTHY


def verdict(
    workers: list[WorkerInfo],
    leader: str | None,
    *,
    worker: str | None,
    scheduler: bool,
    host: str,
) -> tuple[bool, str]:
    """(healthy, why) from the live workers and the scheduler leader's candidate id."""
    if worker is not None:
        named = [w for w in workers if w.name == worker]
        return _workers_verdict(named, f"no live worker is named {worker!r}")
    if not scheduler:
        local = [w for w in workers if w.host == host]
        if local:
            return _workers_verdict(local, "")
    if leader is None:
        return False, "no scheduler leads (none is live, or the store lost their lease)"
    if leader.startswith(f"{host}-"):
        return True, f"scheduler {leader} leads"
    return True, f"scheduler {leader} leads (this host's scheduler, if any, stands by)"


def _workers_verdict(workers: list[WorkerInfo], none: str) -> tuple[bool, str]:
    if not workers:
        return False, none
    w = workers[0]
    state = "draining" if w.draining else "serving"
    return True, f"worker {w.id} {state} ({w.running}/{w.capacity} running)"
