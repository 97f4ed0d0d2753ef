"""`runner get runs`, `runner get run` and `runner logs`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import engine, errors, views
from runner.cli import common, output, run_graph, waiting
from runner.cli.progress import make_progress
from runner.config import Settings
from runner.models import Run, TaskRecord, TaskState, WorkerInfo

if TYPE_CHECKING:
    from runner.store import Store


def add_parsers(sub: Any) -> None:
    get = sub.add_parser(
        "get",
        help="show runs",
        description="Show runs and their tasks.",
        epilog="examples:\n  runner get runs\n  runner get runs --workflow etl -o json\n"
        "  runner get run @latest -o json\n  runner get run RUN --watch\n"
        "  runner get run @latest --format gantt\n  runner get run RUN --format dot | dot -Tsvg\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = get.add_subparsers(dest="what", metavar="runs|run", required=True)
    runs = what.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--workflow", metavar="NAME", help="only the runs of this workflow")
    runs.add_argument(
        "--limit", type=common.positive_int, default=50, metavar="N", help="at most N runs (50)"
    )
    runs.add_argument("-o", "--output", choices=["table", "json"], default="table", help="format")
    runs.set_defaults(func=cmd_get_runs)
    run = what.add_parser("run", help="one run with its tasks and attempts")
    run.add_argument("run", metavar="RUN", help="a run id or @latest")
    run.add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default="table", help="format"
    )
    run.add_argument("--watch", action="store_true", help="follow until the run ends")
    run_graph.add_flags(run)
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
    workers.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="format"
    )
    workers.set_defaults(func=cmd_workers)


def cmd_get_runs(args: argparse.Namespace, settings: Settings) -> int:
    try:
        store = common.open_existing_store(settings)
    except errors.NoStore:
        runs: list[Run] = []
    else:
        try:
            runs = store.list_runs(workflow=args.workflow, limit=args.limit)
        finally:
            store.close()
    if args.output == "json":
        output.dump([output.run_json(r, tasks=False) for r in runs], "json")
    elif not runs:
        what = "runs" if args.workflow is None else f"runs of workflow {args.workflow}"
        print(common.empty_note(what, settings))
    else:
        output.runs_table(runs)
    return errors.EXIT_OK


def cmd_get_run(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_existing_store(settings, run=args.run)
    try:
        run_id = resolve(store, args.run, settings)
        if args.watch:
            stream = sys.stderr if args.output != "table" else sys.stdout
            total = store.get_run(run_id, tasks=False).tasks_total
            progress = make_progress(stream, total=total)
            try:
                run = engine.follow(
                    store, run_id, on_change=progress.on_change, on_summary=progress.on_summary
                )
            finally:
                progress.close()
        else:
            run = waiting.with_reasons(store, store.get_run(run_id))
        if args.format:
            run_graph.show(store, run, args)
            return errors.EXIT_OK
    finally:
        store.close()
    if args.output == "table":
        output.run_detail(run)
        if (line := waiting.hint(run, common.runner_cmd(args))) is not None:
            print(line)
    else:
        output.dump(output.run_json(run), args.output)
    return engine.exit_code(run) if args.watch else errors.EXIT_OK


def resolve(store: Store, ref: str, settings: Settings) -> str:
    """`engine.resolve_run_id`, naming the store when it holds no run at all."""
    try:
        return engine.resolve_run_id(store, ref)
    except errors.RunNotFound:
        if ref != engine.LATEST:
            raise
        raise errors.RunNotFound(
            ref, f"{common.empty_note('runs', settings)}; `runner apply FILE` starts one"
        ) from None


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    try:
        store = common.open_existing_store(settings)
    except errors.NoStore:
        workers: list[WorkerInfo] = []
    else:
        try:
            workers = store.list_workers(now=now)
        finally:
            store.close()
    if args.output == "json":
        output.dump([output.worker_json(w, now=now) for w in workers], "json")
    elif not workers:
        cli = common.runner_cmd(args)
        print(f"{common.empty_note('live workers', settings)}; `{cli} worker` starts one")
    else:
        output.workers_table(workers, now=now)
    return errors.EXIT_OK


# ---------------------------------------------------------------------- logs


def add_logs_parser(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="print the logs of a run's tasks",
        description="Print the stored log of each task's latest attempt (or --attempt N, or "
        "--attempt all: every attempt under its own header), stdout and stderr, timestamped. "
        "The store keeps the last RUNNER_LOG_LIMIT bytes of each attempt; the worker's log "
        "folder (RUNNER_LOG_DIR) keeps its first and last RUNNER_LOG_LIMIT bytes.",
        epilog="examples:\n  runner logs @latest\n  runner logs RUN extract --tail 20\n"
        "  runner logs @latest --failed\n  runner logs RUN extract --attempt 1\n"
        "  runner logs RUN extract --attempt all\n  runner logs RUN -f\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("task", nargs="?", metavar="TASK", help="a task id or name")
    p.add_argument("-f", "--follow", action="store_true", help="print logs as tasks finish")
    p.add_argument("--failed", action="store_true", help="only failed tasks")
    p.add_argument("--tail", type=common.positive_int, metavar="N", help="last N lines")
    p.add_argument(
        "--attempt",
        type=_attempt_arg,
        metavar="N|all",
        help="the log of attempt N (1 is the first), or of every attempt, each under its own "
        "header (default: the latest attempt)",
    )
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


def _attempt_arg(text: str) -> int | str:
    return "all" if text == "all" else common.positive_int(text)


def _print_logs(store: Store, run: Run, task: TaskRecord, args: argparse.Namespace) -> None:
    """The log of the attempt(s) --attempt names (default the latest), a header each."""
    if args.attempt is None:
        numbers = [a.number for a in task.attempts[-1:]]
    elif args.attempt == "all":
        numbers = [a.number for a in task.attempts]
    else:
        numbers = [a.number for a in task.attempts if a.number == args.attempt]
        if not numbers and args.task is not None:
            raise errors.UsageError(
                f"--attempt {args.attempt}: task {task.id} of run {run.id} has "
                f"{len(task.attempts)} attempt(s); `runner get run {run.id}` lists them"
            )
    for number in numbers:
        _print_log(store, run, task, number, args)


def _print_log(
    store: Store, run: Run, task: TaskRecord, attempt: int, args: argparse.Namespace
) -> None:
    text = store.get_log(run.id, task.id, attempt=attempt)
    if not text:  # a log the store does not hold: the worker's file, if on this host
        from runner.worker import log_name

        local = Path(args.log_dir) / f"{log_name(run.id, task.id, attempt)}.log"
        text = local.read_text(errors="replace") if local.is_file() else ""
    lines = text.splitlines()
    if args.tail is not None:
        lines = lines[-args.tail :]
    from runner.cli import gha

    state = next(a.state.value for a in task.attempts if a.number == attempt)
    if attempt == task.attempts[-1].number:
        state = task.state.value
    grouped = gha.enabled()  # each task's log folded in a GitHub Actions step
    title = f"{task.id} (attempt {attempt} of {len(task.attempts)}, {state})"
    print(gha.command("group", title) if grouped else f"==> {title} <==")
    for line in lines:
        print(line)
    if grouped:
        print("::endgroup::")


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    args.log_dir = settings.log_dir
    store = common.open_existing_store(settings, run=args.run)
    try:
        run = store.get_run(resolve(store, args.run, settings))
        if not args.follow:
            tasks = _select(run, args)
            for task in tasks:
                _print_logs(store, run, task, args)
            if not tasks and args.failed:
                print(f"no failed tasks in run {run.id}")
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


_after = views.log_after
