"""`runner report` and the report flags of `apply`/`retry`: JUnit XML and Markdown summaries."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import config, engine, errors, report
from runner.cli import common, taskenv
from runner.config import Settings
from runner.models import Run, TaskState

if TYPE_CHECKING:
    from runner.store import Store

AUTO = "auto"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's JUnit XML and Markdown summary",
        description="Write the JUnit XML (one testcase per task instance) and the Markdown "
        "summary of any stored run: one `runner apply` followed, started with --detach, or "
        "fired by a schedule. A run still going is reported as it stands. See docs/CI.md.",
        epilog="examples:\n  runner report @latest --junit report.xml\n"
        "  runner report RUN --summary auto      # $GITHUB_STEP_SUMMARY when set\n"
        "  runner report RUN --summary summary.md\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="a run id or @latest")
    add_report_flags(p)
    taskenv.add_secret_flag(p)
    p.set_defaults(func=cmd_report)


def add_report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--junit", metavar="PATH", help="write the run as JUnit XML to PATH")
    p.add_argument(
        "--summary",
        metavar="auto|PATH",
        help="write a Markdown summary to PATH; auto: append it to $GITHUB_STEP_SUMMARY when "
        "that is set (at most 1 MiB)",
    )


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    if not args.junit and not args.summary:
        raise errors.UsageError("report: give --junit PATH and/or --summary auto|PATH")
    store = common.open_settings_store(settings)
    try:
        run_id = engine.resolve_run_id(store, args.run)
        write_reports(store, run_id, args, secrets=taskenv.secret_values(args))
    finally:
        store.close()
    return errors.EXIT_OK


def wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "junit", None) or getattr(args, "summary", None))


def write_reports(
    store: Store, run_id: str, args: argparse.Namespace, *, secrets: list[str]
) -> None:
    """Write the reports `args.junit` and `args.summary` ask for, from the run as stored now."""
    run = store.get_run(run_id, now=time.time())
    if args.junit:
        logs = {
            t.id: store.get_log(run.id, t.id, attempt=t.attempts[-1].number)
            for t in run.tasks
            if t.state is TaskState.FAILED and t.attempts
        }
        _write(args.junit, report.junit_xml(run, logs=logs, secrets=secrets), append=False)
    if args.summary:
        _write_summary(run, args.summary, secrets)


def _write_summary(run: Run, target: str, secrets: list[str]) -> None:
    append = False
    if target == AUTO:
        target = os.environ.get(config.ENV_GITHUB_STEP_SUMMARY, "")
        if not target:
            return  # not on GitHub Actions: nothing to write
        append = True  # each step's summary file may already hold other commands' text
    _write(target, report.markdown(run, secrets=secrets), append=append)


def _write(path: str, text: str, *, append: bool) -> None:
    try:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("a" if append else "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise errors.UsageError(f"cannot write the report {path}: {exc.strerror}") from None


def write_after_drive(
    store: Store, run_id: str, args: argparse.Namespace, *, failing: bool
) -> None:
    """The reports of a run `apply`/`retry` followed, whatever its exit code: when the drive
    itself is failing (`failing`), a report that cannot be written is only a warning."""
    if not wanted(args):
        return
    try:
        write_reports(store, run_id, args, secrets=taskenv.secret_values(args))
    except errors.RunnerError as exc:
        if not failing:
            raise
        print(f"runner: the report was not written: {exc.message}", file=sys.stderr)
