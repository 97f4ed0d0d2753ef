"""`runner get runs`, `runner get run` and `runner logs`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import engine, errors
from runner.cli import common, output
from runner.cli.progress import make_progress
from runner.config import Settings
from runner.models import Run, TaskRecord, TaskState

if TYPE_CHECKING:
    from runner.store import Store


def add_parsers(sub: Any) -> None:
    get = sub.add_parser(
        "get",
        help="show runs",
        description="Show runs and their tasks.",
        epilog="examples:\n  runner get runs\n  runner get runs --workflow etl -o json\n"
        "  runner get run @latest -o json\n  runner get run RUN --watch\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = get.add_subparsers(dest="what", metavar="runs|run", required=True)
    runs = what.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--workflow", metavar="NAME")
    runs.add_argument("--limit", type=common.positive_int, default=50)
    runs.add_argument("-o", "--output", choices=["table", "json"], default="table")
    runs.set_defaults(func=cmd_get_runs)
    run = what.add_parser("run", help="one run with its tasks and attempts")
    run.add_argument("run", metavar="RUN", help="a run id or @latest")
    run.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    run.add_argument("--watch", action="store_true", help="follow until the run ends")
    run.set_defaults(func=cmd_get_run)
    add_logs_parser(sub)
    workers = sub.add_parser(
        "workers",
        help="list live workers",
        description="Live workers (their lease has not expired) with their load and the age "
        "of their last heartbeat. A worker that stops heartbeating disappears when its lease "
        "expires, and its tasks go back to the queue.",
        epilog="examples:\n  runner workers\n  runner workers -o json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    workers.add_argument("-o", "--output", choices=["table", "json"], default="table")
    workers.set_defaults(func=cmd_workers)


def cmd_get_runs(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        runs = store.list_runs(workflow=args.workflow, limit=args.limit)
    finally:
        store.close()
    if args.output == "json":
        output.dump([output.run_json(r, tasks=False) for r in runs], "json")
    else:
        output.runs_table(runs)
    return errors.EXIT_OK


def cmd_get_run(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        run_id = engine.resolve_run_id(store, args.run)
        if args.watch:
            progress = make_progress(sys.stderr if args.output != "table" else sys.stdout)
            try:
                run = engine.follow(store, run_id, on_change=progress.update)
            finally:
                progress.close()
        else:
            run = store.get_run(run_id)
    finally:
        store.close()
    if args.output == "table":
        output.run_detail(run)
    else:
        output.dump(output.run_json(run), args.output)
    return engine.exit_code(run) if args.watch else errors.EXIT_OK


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        now = time.time()
        workers = store.list_workers(now=now)
    finally:
        store.close()
    if args.output == "json":
        output.dump([output.worker_json(w, now=now) for w in workers], "json")
    else:
        output.workers_table(workers, now=now)
    return errors.EXIT_OK


# ---------------------------------------------------------------------- logs


def add_logs_parser(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="print the logs of a run's tasks",
        description="Print the stored log of each task's latest attempt (stdout and stderr, "
        "timestamped). The store keeps the last RUNNER_LOG_LIMIT bytes of each attempt; the "
        "full log is in the worker's log folder.",
        epilog="examples:\n  runner logs @latest\n  runner logs RUN extract --tail 20\n"
        "  runner logs @latest --failed\n  runner logs RUN -f\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("task", nargs="?", metavar="TASK", help="a task id or name")
    p.add_argument("-f", "--follow", action="store_true", help="print logs as tasks finish")
    p.add_argument("--failed", action="store_true", help="only failed tasks")
    p.add_argument("--tail", type=common.positive_int, metavar="N", help="last N lines")
    p.set_defaults(func=cmd_logs)


def _select(run: Run, args: argparse.Namespace) -> list[TaskRecord]:
    tasks = list(run.tasks)
    if args.task is not None:
        tasks = [t for t in tasks if args.task in (t.id, t.name)]
        if not tasks:
            raise errors.TaskNotFound(run.id, args.task)
    if args.failed:
        tasks = [t for t in tasks if t.state is TaskState.FAILED]
    return tasks


def _print_log(store: Store, run: Run, task: TaskRecord, args: argparse.Namespace) -> None:
    if not task.attempts:
        return
    attempt = task.attempts[-1].number
    text = store.get_log(run.id, task.id, attempt=attempt)
    if not text:  # a log the store does not hold: the worker's file, if on this host
        from runner.worker import log_name

        local = Path(args.log_dir) / f"{log_name(run.id, task.id, attempt)}.log"
        text = local.read_text(errors="replace") if local.is_file() else ""
    lines = text.splitlines()
    if args.tail is not None:
        lines = lines[-args.tail :]
    from runner.cli import gha

    grouped = gha.enabled()  # each task's log folded in a GitHub Actions step
    title = f"{task.id} (attempt {attempt}, {task.state.value})"
    print(gha.command("group", title) if grouped else f"==> {title} <==")
    for line in lines:
        print(line)
    if grouped:
        print("::endgroup::")


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    args.log_dir = settings.log_dir
    store = common.open_settings_store(settings)
    try:
        run = store.get_run(engine.resolve_run_id(store, args.run))
        if not args.follow:
            for task in _select(run, args):
                _print_log(store, run, task, args)
            return errors.EXIT_OK
        return _follow_logs(store, run, args)
    finally:
        store.close()


def _follow_logs(store: Store, run: Run, args: argparse.Namespace) -> int:
    """Print the selected tasks' logs as they grow (workers stream running attempts' logs into
    the store every second), each attempt under its own header, until the run ends."""
    shown: dict[tuple[str, int], str] = {}  # (task, attempt) -> the stored text printed so far
    while True:
        for task in _select(run, args):
            if task.attempts and task.state is not TaskState.PENDING:
                _print_new(store, run, task, shown)
        sys.stdout.flush()
        if run.state.terminal and all(t.state.terminal for t in run.tasks):
            return engine.exit_code(run)
        store.wait(1.0, run_id=run.id)
        run = store.get_run(run.id)


def _print_new(store: Store, run: Run, task: TaskRecord, shown: dict[tuple[str, int], str]) -> None:
    attempt = task.attempts[-1].number
    key = (task.id, attempt)
    text = store.get_log(run.id, task.id, attempt=attempt)
    before = shown.get(key)
    if before is None:
        if not text and not task.state.terminal:
            return
        print(f"==> {task.id} (attempt {attempt}) <==")
        before = ""
    if new := _after(before, text):
        print(new, end="" if new.endswith("\n") else "\n")
    shown[key] = text


def _after(before: str, text: str) -> str:
    """What `text` adds to `before`. The store keeps only the last bytes of a log, so once it
    trims, the old text's end is found again inside the new one."""
    if text.startswith(before):
        return text[len(before) :]
    tail = before[-256:]
    at = text.rfind(tail) if tail else -1
    return text[at + len(tail) :] if at >= 0 else text
