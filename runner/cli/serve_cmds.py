"""`runner scheduler` and `runner serve`: the long-running HA scheduler, alone or with workers."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import errors, interrupts
from runner.cli import common, gc_cmds, hookwire, logfmt, metrics_cmds, run_cmds, ui_cmds
from runner.config import Settings
from runner.cron.retention import DEFAULT_OLDER_THAN
from runner.cron.scheduler import Scheduler
from runner.models import DISPATCH_STRATEGIES

if TYPE_CHECKING:
    from runner.store import Store

_RAW = argparse.RawDescriptionHelpFormatter


def add_parsers(sub: Any) -> None:
    _add_scheduler_parser(sub)
    _add_serve_parser(sub)


def _add_loop_flags(p: argparse.ArgumentParser) -> None:
    metrics_cmds.add_listen_flags(p)
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


WEBHOOKS = ("webhook",)  # what `runner scheduler` delivers; workers deliver command hooks


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
    p.add_argument(
        "--workers",
        type=common.positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="local worker slots (default: the CPUs, here %(default)s)",
    )
    p.add_argument("--ui", action="store_true", help="also serve the web dashboard (docs/UI.md)")
    ui_cmds.add_ui_flags(p, prefix="ui-")
    p.set_defaults(func=cmd_serve)


def _scheduler(
    args: argparse.Namespace, settings: Settings, store: Store, *, commands: bool = False
) -> Scheduler:
    if args.workflows is not None and not args.workflows.is_dir():
        raise errors.UsageError(f"--workflows {args.workflows}: not a folder")
    candidate = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def report(text: str) -> None:
        logfmt.announce(args, text, event="scheduler_report")

    return Scheduler(
        store,
        candidate=candidate,
        lease_ttl=args.lease_ttl,
        folder=args.workflows,
        report=report,
        dispatch_default=args.dispatch,
        gc_older_than=args.gc_older_than,
        anchor=common.one_machine(settings),
        hooks=hookwire.deliverer(  # serve's workers run where it runs: commands too
            settings, store, name=candidate, report=report, kinds=None if commands else WEBHOOKS
        ),
    )


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from runner.executor import Orphans

    # As a container's PID 1 the scheduler inherits every orphan: reap them (no zombies).
    orphans = Orphans(folder=None)
    common.wait_for_store(settings, who="scheduler")
    exporter = metrics_cmds.Exporter(args)
    store = exporter.instrument(common.open_settings_store(settings))
    stop = threading.Event()
    try:
        scheduler = _scheduler(args, settings, store)
        logfmt.configure(args)
        exporter.start(settings, cluster=True, candidate=scheduler.candidate)
        text = f"scheduler {scheduler.candidate} on {settings.store}"
        logfmt.announce(args, text, event="scheduler_started")
        _loop_until_signal(scheduler, stop)
    finally:
        exporter.close()
        store.close()
        orphans.close()
    return errors.EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    common.wait_for_store(settings, who="serve")
    exporter = metrics_cmds.Exporter(args)
    store = exporter.instrument(common.open_settings_store(settings))
    dashboard = ui_cmds.start_for_serve(args, settings, store)
    worker = run_cmds.make_worker(
        settings,
        concurrency=args.workers,
        lease_ttl=None,
        name="serve",
        wrap=exporter.instrument,
        warm=True,
    )
    thread = threading.Thread(target=worker.run, name="serve-worker", daemon=True)
    try:
        scheduler = _scheduler(args, settings, store, commands=True)
        logfmt.configure(args, worker=worker.id)
        exporter.start(settings, cluster=True, candidate=scheduler.candidate)
        thread.start()
        text = f"serving {settings.store}: scheduler and {args.workers} worker slot(s)"
        logfmt.announce(args, text, event="serve_started", worker_id=worker.id)
        _loop_until_signal(scheduler, threading.Event())
    finally:
        exporter.close()
        if thread.is_alive():
            worker.drain(30.0)
            thread.join()
        worker.store.close()
        worker.executor.close()
        if dashboard is not None:
            dashboard.stop()
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
        while not interrupts.wait(done, 0.5):
            pass
    finally:
        stop.set()
        interrupts.wait(done)
