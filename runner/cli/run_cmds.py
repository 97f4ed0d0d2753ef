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

from runner import config, engine, errors, interrupts
from runner.cli import common, interrupt, output, taskenv, waiting
from runner.cli.progress import make_progress
from runner.config import Settings
from runner.failpoints import Failpoints
from runner.models import Plan, Run, TaskState

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
    common.add_local_worker_flags(p)
    p.add_argument(
        "--prefetch",
        type=common.non_negative_int,
        metavar="N",
        help="fix the local workers' prefetch depth at N (default: adaptive; 0: strict "
        "priority order; see `runner worker --prefetch`)",
    )
    p.add_argument("--detach", action="store_true", help="return once the run is stored")
    p.add_argument(
        "--timeout",
        type=common.duration_arg,
        metavar="DURATION",
        help="give up waiting after DURATION (exit 4): the local workers stop at once and the "
        "run's running tasks go back to the queue for any worker (`apply --resume RUN`)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="json: progress on stderr, the finished run as JSON on stdout",
    )
    taskenv.add_secret_flag(p)
    from runner.cli import report_cmds

    report_cmds.add_report_flags(p)


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
        "--force",
        action="store_true",
        help="scheduled workflow: take the schedule over from another file claiming its name, "
        "or replace its registered params",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="run cached tasks even when the cache has their result (and record the new one)",
    )
    _add_drive_flags(p)
    p.set_defaults(func=cmd_apply)


def _load_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The plan of `apply FILE`: anchored to the file's folder on one machine, its cached tasks
    refreshed with --no-cache."""
    from runner import workflow  # yaml, jsonschema: not for retry and cancel

    params = common.parse_params(args.param)
    anchor = (os.path.dirname(args.file) or ".") if common.one_machine(settings) else None
    plan = workflow.load_plan(args.file, params=params, params_file=args.params_file, anchor=anchor)
    if args.no_cache:
        from runner import cache

        plan = cache.refresh(plan)
    return plan


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    if (args.file is None) == (args.resume is None):
        raise errors.UsageError("apply: give a workflow FILE, or --resume RUN (not both)")
    plan = None if args.file is None else _load_plan(args, settings)
    if plan is None:
        store = common.open_existing_store(settings, run=args.resume)
    else:
        store = common.open_settings_store(settings)
    try:
        if plan is not None and plan.schedule is not None:
            from runner.cli import cron_apply  # the cron modules: only for scheduled workflows

            lines = cron_apply.register_and_describe(
                store, plan, now=time.time(), force=args.force, now_run=args.now
            )
            for line in lines:
                print(line, flush=True)
            if not args.now:
                return errors.EXIT_OK
        if plan is not None:
            run = interrupt.submit(store, plan, announce=lambda run: _announce(run, args))
        else:
            run = store.get_run(engine.resolve_run_id(store, args.resume), tasks=False)
            _announce(run, args)
        if args.detach:
            waiting.say_if_unserved(store, run.id, cli=common.runner_cmd(args))
            return errors.EXIT_OK
        return drive(store, run.id, args, settings, plan=plan)
    finally:
        store.close()


def _announce(run: Run, args: argparse.Namespace) -> None:
    stream = sys.stderr if args.output == "json" or args.detach else sys.stdout
    print(f"run {run.id} created" if run.created_at else run.id, file=stream, flush=True)
    if args.detach:
        print(run.id, flush=True)


def drive(
    store: Store,
    run_id: str,
    args: argparse.Namespace,
    settings: Settings,
    *,
    plan: Plan | None = None,
) -> int:
    """Run local workers (if any) and follow the run to its end; the exit code says how.
    The reports asked for (--junit, --summary) are written whatever the exit code."""
    failing = True
    try:
        code = _drive(store, run_id, args, settings, plan=plan)
        failing = False
        return code
    finally:
        from runner.cli import report_cmds

        report_cmds.write_after_drive(store, run_id, args, failing=failing)


def _drive(
    store: Store, run_id: str, args: argparse.Namespace, settings: Settings, *, plan: Plan | None
) -> int:
    stream = sys.stderr if args.output == "json" else sys.stdout
    local: _LocalWorkers | None = None
    try:  # the run is stored: an interrupt from here on cancels it, while starting up too
        total = store.get_run(run_id, tasks=False).tasks_total
        progress = make_progress(stream, plan=plan, total=total)
        local = _LocalWorkers.start(args, settings)
        Failpoints(settings.failpoints).hit("apply.before_follow")
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        cli = common.runner_cmd(args)
        watch = waiting.Watch(store, run_id, cli=cli, local=local.worker is not None)
    except errors.RunnerError:
        if local is not None:
            local.stop(abort_run=None)
        raise
    except BaseException:  # Ctrl-C or SIGTERM while starting: cancel the run, as below
        interrupt.cancel_interrupted(store, run_id)
        if local is not None:
            local.stop(abort_run=run_id)
        raise
    try:
        watch.start()
        run = engine.follow(
            store,
            run_id,
            on_change=progress.on_change,
            on_summary=progress.on_summary,
            detail_every=progress.detail_every,
            deadline=deadline,
            check=lambda: local.check(run_id),
            tasks=progress.on_change is not None,
        )
        if progress.on_change is None:  # a large run: what the last lines need, not it whole
            failed = None if args.output == "json" else (TaskState.FAILED,)
            run = store.get_run(run_id, states=failed)
    except errors.WaitTimeout:
        progress.close()
        handed = local.hand_back()
        raise errors.WaitTimeout(
            waiting.gave_up(run_id, after=args.timeout, cli=cli, handed=handed)
        ) from None
    except errors.RunnerError as exc:
        progress.close()
        local.stop(abort_run=None, abandon=isinstance(exc, errors.StoreError))
        raise
    except BaseException:  # Ctrl-C or SIGTERM: cancel the run cleanly, then exit 130/143
        progress.close()
        interrupt.cancel_interrupted(store, run_id)
        local.stop(abort_run=run_id)
        raise
    finally:
        watch.stop()
    progress.close()
    local.stop(abort_run=None)
    return _ended(store, run, args, settings, local=local.worker is not None)


def _ended(
    store: Store, run: Run, args: argparse.Namespace, settings: Settings, *, local: bool
) -> int:
    """The followed run has ended: its hooks (with local workers), the last lines, the exit
    code."""
    if local:
        run = _deliver_hooks(store, run, settings)
    _summary(run, args)
    from runner.cli import gha

    if gha.enabled():
        stream = gha.out_stream(args.output == "json")
        gha.print_run(store, run, secrets=taskenv.secret_values(args), stream=stream)
    return engine.exit_code(run)  # hooks never change it


def _deliver_hooks(store: Store, run: Run, settings: Settings) -> Run:
    """With local workers, deliver the ended run's hooks before exiting (bounded wait); what
    is still due then is left to a scheduler or worker (docs/HOOKS.md)."""
    if not any(h.state.value in ("due", "delivering") for h in run.hooks):
        return run
    from runner.cli import hookwire

    def report(text: str) -> None:
        print(f"runner: {text}", file=sys.stderr, flush=True)

    hooks = hookwire.deliverer(settings, store, name=f"apply-{os.getpid()}", report=report)
    if not hooks.settle(run.id, within=hookwire.APPLY_WAIT):
        print(
            f"runner: hooks of run {run.id} are still due; a scheduler or worker delivers them",
            file=sys.stderr,
        )
    return store.get_run(run.id)


SUMMARY_NAMES = 10  # failed tasks the last line names


def _summary(run: Run, args: argparse.Namespace) -> None:
    if args.output == "json":
        output.dump(output.run_json(run), "json")
        return
    failed = [t.id for t in run.tasks if t.state.value == "failed"]
    line = f"run {run.id} {run.state.value} in {output.duration(run)}"
    if failed:
        named = ", ".join(failed[:SUMMARY_NAMES])
        if len(failed) > SUMMARY_NAMES:
            named += f" and {len(failed) - SUMMARY_NAMES:,} more"
        line += f"; failed: {named} (see `runner logs {run.id} --failed`)"
    print(line, flush=True)


# apply gives up (exit 3) when its local workers' store writes fail for this many lease TTLs
# (the workers have fenced by then: their tasks are killed, nothing is recorded)
GIVE_UP_TTLS = 3


class _LocalWorkers:
    """The worker slots `runner apply` runs in-process while it follows its run."""

    def __init__(
        self, worker: Worker | None, done: _Done | None, *, store: str, give_up: float
    ) -> None:
        self.worker = worker
        self.done = done
        self.store = store
        self.give_up = give_up  # seconds of failing store writes before apply exits 3

    @classmethod
    def start(cls, args: argparse.Namespace, settings: Settings) -> _LocalWorkers:
        n = args.workers
        if n is None:
            n = (os.cpu_count() or 1) if settings.store.startswith("sqlite:") else 0
        give_up = GIVE_UP_TTLS * (args.lease_ttl or settings.lease_ttl)
        if n == 0:
            return cls(None, None, store=settings.store, give_up=give_up)
        worker = make_worker(
            settings,
            concurrency=n,
            lease_ttl=args.lease_ttl,
            name="apply",
            prefetch=args.prefetch,
            masked=taskenv.secret_values(args),
        )
        return cls(worker, run_in_thread(worker), store=settings.store, give_up=give_up)

    def hand_back(self) -> int | None:
        """Stop the local workers at once: their running attempts are killed and go back to
        the queue unrecorded (`Worker.drain` with no grace), for any worker to run again.
        Returns how many attempts went back, or None when there were no local workers."""
        if self.worker is None or self.done is None:
            return None
        held = self.worker.running()
        self.worker.drain(0.0)
        interrupts.wait(self.done)
        self.worker.store.close()
        self.worker.executor.close()
        return held

    def check(self, run_id: str) -> None:
        """StoreError (exit 3) once the local workers' store writes have failed for
        `give_up` seconds (a full disk): the run stays stored as it was, to be resumed with
        `runner apply --resume RUN` once the store works again."""
        if self.worker is None:
            return
        failing = self.worker.store_failing_for()
        if failing >= self.give_up:
            raise errors.StoreError(
                f"store {self.store}: writes have failed for {failing:.0f} s (see"
                " the warnings above); giving up. The run is kept: free the store (disk space)"
                f" and finish it with `runner apply --resume {run_id}`"
            )

    def stop(self, *, abort_run: str | None, abandon: bool = False) -> None:
        """Stop the local workers; `abandon`: their held attempts are killed and recorded
        nothing (the store cannot take them), so stopping does not wait for the store."""
        if self.worker is None or self.done is None:
            return
        if abort_run is not None:
            self.worker.abort(abort_run)
        if abandon:
            self.worker.drain(0.0)
        self.worker.stop()
        interrupts.wait(self.done)
        self.worker.store.close()
        # The process exits next: the reaper sweeps for leftovers on its own, as at a death.
        self.worker.executor.close(wait=False)


def make_worker(
    settings: Settings,
    *,
    concurrency: int,
    lease_ttl: float | None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    weight: int = 1,
    drain_timeout: float = 30.0,
    prefetch: int | None = None,
    wrap: Callable[[Store], Store] | None = None,
    base_env: dict[str, str] | None = None,
    masked: list[str] | None = None,
    warm: bool = False,
) -> Worker:
    """A worker with its own store connection (passed through `wrap`, e.g. to count its
    operations) and executor, as the settings say. Its tasks start from `base_env` (default:
    this process's whole environment); `masked` values are masked in their logs. `warm`: a
    long-lived worker, whose executor starts its call children ahead (`Executor.warm_calls`)."""
    from runner.executor import Executor  # worker and executor: only the commands that run tasks
    from runner.worker import Worker

    store = common.open_settings_store(settings)
    store = store if wrap is None else wrap(store)
    executor = Executor(
        slots=concurrency,
        log_dir=settings.log_dir,
        log_limit=settings.log_limit,
        base_env=base_env,
        secret_source=os.environ,
        masked=masked or (),
        failpoints=Failpoints(settings.failpoints),  # its `reaper.*` points
    )
    if warm:
        executor.warm_calls()
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
    store = common.open_existing_store(settings, run=args.run)
    try:
        run_id = engine.resolve_run_id(store, args.run)
        tasks = store.retry_run(run_id, now=time.time(), dry_run=args.dry_run)
        verb = "would re-run" if args.dry_run else "re-running"
        print(f"{run_id}: {verb} {len(tasks)} task(s)", file=sys.stderr)
        for task_id in tasks:
            print(task_id)
        if args.detach and not args.dry_run:
            waiting.say_if_unserved(store, run_id, cli=common.runner_cmd(args))
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
    store = common.open_existing_store(settings, run=args.run)
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
    p.add_argument(
        "--concurrency",
        type=common.positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="tasks run at once (default: the CPUs, here %(default)s)",
    )
    p.add_argument("--name", help="worker name (default: the host name)")
    p.add_argument(
        "--labels",
        type=common.labels_arg,
        default={},
        metavar="K=V,...",
        help="labels a task's selector matches (spec: selector: {gpu: 'true'})",
    )
    p.add_argument(
        "--weight",
        type=common.positive_int,
        default=1,
        metavar="N",
        help="share of tasks under `--dispatch weighted` (default 1)",
    )
    p.add_argument(
        "--lease-ttl",
        type=common.positive_float,
        metavar="SECONDS",
        help=f"the worker's lease: if it stops heartbeating, its tasks go back to the queue "
        f"after this (env {config.ENV_LEASE_TTL}; default {config.DEFAULT_LEASE_TTL:g})",
    )
    p.add_argument(
        "--drain-timeout",
        type=common.duration_arg,
        default=30.0,
        metavar="DURATION",
        help="on SIGTERM or Ctrl-C, how long running tasks may finish before they go back to "
        "the queue (default 30s)",
    )
    p.add_argument(
        "--prefetch",
        type=common.non_negative_int,
        metavar="N",
        help="hold up to N claimed tasks beyond the busy slots (claimed and recorded in "
        "batches). Default: adaptive, from the measured task and claim times: short tasks are "
        "batched, long ones not held, and a worker holds no more claimed, unstarted work than "
        "its slots start in about 100 ms, so a task of higher priority starts within about "
        "100 ms of work. 0: strict priority order (claim only for an idle slot)",
    )
    taskenv.add_worker_flags(p)
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
        base_env=None if args.inherit_env else taskenv.base_env(args.pass_env),
        masked=taskenv.secret_values(args),
        wrap=exporter.instrument,
        warm=True,
    )
    logfmt.configure(args, worker=worker.id)
    done = run_in_thread(worker)
    from runner.cli import hookwire

    hooks_stop = threading.Event()  # the worker delivers recorded hooks too (docs/HOOKS.md)
    delivering = hookwire.deliverer(settings, worker.store, name=worker.id).start(hooks_stop)
    say = functools.partial(logfmt.announce, args, worker_id=worker.id)
    say(f"worker {worker.id} serving {settings.store}", event="worker_serving")
    try:
        while not interrupts.wait(done, 0.5):
            pass
    except BaseException:  # SIGINT/SIGTERM: drain, then exit cleanly
        say(f"worker {worker.id} draining", event="worker_draining")
        worker.drain(args.drain_timeout)
        interrupts.wait(done)
    finally:
        hooks_stop.set()
        delivering.join(hookwire.STOP_WAIT)
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
