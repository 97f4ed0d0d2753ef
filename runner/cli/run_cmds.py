"""`runner apply`, `runner retry`, `runner cancel` and `runner worker`."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner import engine, errors
from runner.cli import common, output
from runner.cli.progress import make_progress
from runner.config import Settings
from runner.models import Run

if TYPE_CHECKING:
    from runner.store import Store
    from runner.worker import Worker

APPLY_EXAMPLES = """\
examples:
  runner apply examples/diamond.yaml
  runner apply etl.yaml --param date=2026-01-01 --workers 4
  runner apply etl.yaml --detach            # store the run, print its id, return
  runner apply --resume @latest             # finish a run whose processes died
  runner apply etl.yaml -o json | jq .state
  runner apply workflows/nightly-etl.yaml   # spec.schedule: register, print next 3 times
"""


def add_parsers(sub: Any) -> None:
    add_apply_parser(sub)
    add_retry_parser(sub)
    add_cancel_parser(sub)
    add_worker_parser(sub)


def _add_drive_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=common.non_negative_int,
        metavar="N",
        help="local worker slots (default: CPUs with the embedded store, 0 with etcd)",
    )
    p.add_argument(
        "--prefetch",
        type=common.non_negative_int,
        default=0,
        metavar="N",
        help="the local workers hold up to N claimed tasks beyond their busy slots and record "
        "results in batches (see `runner worker --prefetch`)",
    )
    p.add_argument("--detach", action="store_true", help="return once the run is stored")
    p.add_argument("--timeout", type=common.duration_arg, help="give up waiting (exit 4)")
    p.add_argument("--lease-ttl", type=common.positive_float, metavar="SECONDS")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")


def add_apply_parser(sub: Any) -> None:
    p = sub.add_parser(
        "apply",
        help="validate, plan, store and run a workflow",
        description="Validate and plan FILE, store the run, print its id and run it to the end.",
        epilog=APPLY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", nargs="?", metavar="FILE")
    common.add_param_flags(p)
    p.add_argument("--resume", metavar="RUN", help="follow and finish a stored run instead")
    p.add_argument(
        "--now", action="store_true", help="scheduled workflow: also start one run at once"
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="run cached tasks even when the cache has their result (and record the new one)",
    )
    _add_drive_flags(p)
    p.set_defaults(func=cmd_apply)


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    if (args.file is None) == (args.resume is None):
        raise errors.UsageError("apply: give a workflow FILE, or --resume RUN (not both)")
    plan = None
    if args.file is not None:
        from runner import workflow  # yaml, jsonschema, networkx: not for retry and cancel

        params = common.parse_params(args.param)
        plan = workflow.load_plan(args.file, params=params, params_file=args.params_file)
        if args.no_cache:
            from runner import cache

            plan = cache.refresh(plan)
    store = common.open_settings_store(settings)
    try:
        if plan is not None and plan.schedule is not None:
            from runner.cli import cron_apply  # the cron modules: only for scheduled workflows

            for line in cron_apply.register_and_describe(store, plan, now=time.time()):
                print(line, flush=True)
            if not args.now:
                return errors.EXIT_OK
        if plan is not None:
            run = engine.submit(store, plan, now=time.time())
        else:
            run = store.get_run(engine.resolve_run_id(store, args.resume), tasks=False)
        _announce(run, args)
        if args.detach:
            return errors.EXIT_OK
        return drive(store, run.id, args, settings)
    finally:
        store.close()


def _announce(run: Run, args: argparse.Namespace) -> None:
    stream = sys.stderr if args.output == "json" or args.detach else sys.stdout
    print(f"run {run.id} created" if run.created_at else run.id, file=stream, flush=True)
    if args.detach:
        print(run.id, flush=True)


def drive(store: Store, run_id: str, args: argparse.Namespace, settings: Settings) -> int:
    """Run local workers (if any) and follow the run to its end; the exit code says how."""
    stream = sys.stderr if args.output == "json" else sys.stdout
    progress = make_progress(stream)
    local = _LocalWorkers.start(args, settings)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        run = engine.follow(store, run_id, on_change=progress.update, deadline=deadline)
    except errors.RunnerError:
        progress.close()
        local.stop(abort_run=None)
        raise
    except BaseException:  # Ctrl-C or SIGTERM: cancel the run cleanly, then exit 130/143
        progress.close()
        print(f"runner: cancelling run {run_id}", file=sys.stderr)
        store.cancel_run(run_id, now=time.time(), reason="interrupted")
        local.stop(abort_run=run_id)
        raise
    progress.close()
    local.stop(abort_run=None)
    _summary(run, args)
    return engine.exit_code(run)


def _summary(run: Run, args: argparse.Namespace) -> None:
    if args.output == "json":
        output.dump(output.run_json(run), "json")
        return
    failed = [t.id for t in run.tasks if t.state.value == "failed"]
    line = f"run {run.id} {run.state.value} in {output.duration(run)}"
    if failed:
        line += f"; failed: {', '.join(failed)} (see `runner logs {run.id} --failed`)"
    print(line, flush=True)


class _LocalWorkers:
    """The worker slots `runner apply` runs in-process while it follows its run."""

    def __init__(self, worker: Worker | None, done: _Done | None) -> None:
        self.worker = worker
        self.done = done

    @classmethod
    def start(cls, args: argparse.Namespace, settings: Settings) -> _LocalWorkers:
        n = args.workers
        if n is None:
            n = (os.cpu_count() or 1) if settings.store.startswith("sqlite:") else 0
        if n == 0:
            return cls(None, None)
        worker = make_worker(
            settings, concurrency=n, lease_ttl=args.lease_ttl, name="apply", prefetch=args.prefetch
        )
        return cls(worker, run_in_thread(worker))

    def stop(self, *, abort_run: str | None) -> None:
        if self.worker is None or self.done is None:
            return
        if abort_run is not None:
            self.worker.abort(abort_run)
        self.worker.stop()
        self.done.wait()
        self.worker.store.close()
        self.worker.executor.close()


def make_worker(
    settings: Settings,
    *,
    concurrency: int,
    lease_ttl: float | None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    weight: int = 1,
    drain_timeout: float = 30.0,
    prefetch: int = 0,
    wrap: Callable[[Store], Store] | None = None,
) -> Worker:
    """A worker with its own store connection (passed through `wrap`, e.g. to count its
    operations) and executor, as the settings say."""
    from runner.executor import Executor  # worker and executor: only the commands that run tasks
    from runner.worker import Worker

    store = common.open_settings_store(settings)
    store = store if wrap is None else wrap(store)
    executor = Executor(slots=concurrency, log_dir=settings.log_dir, log_limit=settings.log_limit)
    return Worker(
        store,
        executor,
        name=name,
        concurrency=concurrency,
        lease_ttl=lease_ttl or settings.lease_ttl,
        labels=labels,
        weight=weight,
        drain_timeout=drain_timeout,
        prefetch=prefetch,
    )


# ---------------------------------------------------------------------- retry, cancel


def add_retry_parser(sub: Any) -> None:
    p = sub.add_parser(
        "retry",
        help="re-run the failed, cancelled and skipped tasks of a finished run",
        description="Re-run the failed, cancelled and skipped tasks of a finished run, "
        "keeping the succeeded ones, then follow it like apply.",
        epilog="examples:\n  runner retry @latest\n  runner retry RUN --dry-run\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--dry-run", action="store_true", help="print what would re-run")
    _add_drive_flags(p)
    p.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        run_id = engine.resolve_run_id(store, args.run)
        tasks = store.retry_run(run_id, now=time.time(), dry_run=args.dry_run)
        verb = "would re-run" if args.dry_run else "re-running"
        print(f"{run_id}: {verb} {len(tasks)} task(s)", file=sys.stderr)
        for task_id in tasks:
            print(task_id)
        if args.dry_run or args.detach:
            return errors.EXIT_OK
        return drive(store, run_id, args, settings)
    finally:
        store.close()


def add_cancel_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel a run",
        description="Cancel a run: queued tasks are cancelled, running ones are killed.",
        epilog="examples:\n  runner cancel @latest\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN")
    p.set_defaults(func=cmd_cancel)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        from runner import actions

        run = actions.cancel_run(store, args.run, now=time.time())
        print(f"run {run.id} {run.state.value}")
        return errors.EXIT_OK
    finally:
        store.close()


# ---------------------------------------------------------------------- worker


def add_worker_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="serve the store's queue",
        description="A long-running worker: claims ready tasks of every run and executes them. "
        "SIGTERM or Ctrl-C drains it: no new claims, running tasks get --drain-timeout to "
        "finish, then go back to the queue. Exit code 0 after a drain. `runner worker drain "
        "NAME` drains the live workers named NAME from elsewhere: they learn it from their "
        "next heartbeat.",
        epilog="examples:\n  runner worker --concurrency 4\n"
        "  runner --store etcd://10.0.0.5:2379 worker --name gpu-1 --labels gpu=true\n"
        "  runner worker drain gpu-1\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=["drain"], help="drain: drain worker NAME")
    p.add_argument("target", nargs="?", metavar="NAME", help="the worker to drain")
    p.add_argument("--concurrency", type=common.positive_int, default=os.cpu_count() or 1)
    p.add_argument("--name", help="worker name (default: the host name)")
    p.add_argument("--labels", type=common.labels_arg, default={}, metavar="K=V,...")
    p.add_argument("--weight", type=common.positive_int, default=1)
    p.add_argument("--lease-ttl", type=common.positive_float, metavar="SECONDS")
    p.add_argument("--drain-timeout", type=common.duration_arg, default=30.0)
    p.add_argument(
        "--prefetch",
        type=common.non_negative_int,
        default=0,
        metavar="N",
        help="hold up to N claimed tasks beyond the busy slots, claim them in batches and "
        "record results in batches off the slots: fewer store transactions per task (for many "
        "short tasks), at the cost of strict priority order across workers",
    )
    from runner.cli import metrics_cmds

    metrics_cmds.add_listen_flags(p, worker=True)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "drain":
        from runner.cli import cluster_cmds

        return cluster_cmds.cmd_worker_drain(args, settings)
    common.wait_for_store(settings, who="worker")
    from runner.cli import logfmt, metrics_cmds

    exporter = metrics_cmds.Exporter(args)
    exporter.start(settings, cluster=args.metrics_cluster)
    worker = make_worker(
        settings,
        concurrency=args.concurrency,
        lease_ttl=args.lease_ttl,
        name=args.name,
        labels=args.labels,
        weight=args.weight,
        drain_timeout=args.drain_timeout,
        prefetch=args.prefetch,
        wrap=exporter.instrument,
    )
    logfmt.configure(args, worker=worker.id)
    done = run_in_thread(worker)
    say = functools.partial(logfmt.announce, args, worker_id=worker.id)
    say(f"worker {worker.id} serving {settings.store}", event="worker_serving")
    try:
        while not done.wait(0.5):
            pass
    except BaseException:  # SIGINT/SIGTERM: drain, then exit cleanly
        say(f"worker {worker.id} draining", event="worker_draining")
        worker.drain(args.drain_timeout)
        done.wait()
    finally:
        exporter.close()
        worker.store.close()
        worker.executor.close()
    if done.error is not None:
        raise done.error  # e.g. StoreUnavailable: exit 3 with its message
    return errors.EXIT_OK


class _Done(threading.Event):
    """Set when `Worker.run` has returned; `error` is what it raised, if anything."""

    error: BaseException | None = None


def run_in_thread(worker: Worker) -> _Done:
    """Run the worker in a daemon thread; the event is set when `Worker.run` has returned.

    Waiting on an Event rather than `Thread.join` matters: a signal that interrupts `join` in
    the main thread can leave the thread looking finished while it still runs (CPython 3.11).
    """
    done = _Done()

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # handed to the main thread, which reports it
            done.error = exc
        finally:
            done.set()

    threading.Thread(target=target, name="worker", daemon=True).start()
    return done
