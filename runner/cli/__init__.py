"""The `runner` command line: a thin layer over the library API.

`main` is the single error boundary: a RunnerError prints its message to stderr and returns its
exit code (see runner.errors); anything else returns 70, with a traceback only under --debug.

Commands load lazily (docs/PERFORMANCE.md, "CLI start-up"): `COMMANDS` names every command with
its one-line help and the module under runner/cli/ that adds it. `runner --help` needs only that
table; a command's module, and what only it needs (worker, executor, cron, bench, jsonschema), is
imported when that command runs. A module adds its commands through `add_parsers(subparsers)`;
each command is a function `cmd_<name>(args, settings) -> int`. Adding a command is one line in
`COMMANDS` (and its module).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import runner
from runner import config, errors, interrupts


@dataclass(frozen=True, slots=True)
class Command:
    """A `runner` command: its name, its line in `runner --help` and its module in runner/cli/."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("validate", "workflow_cmds", "check workflow files and report every problem"),
    Command("plan", "workflow_cmds", "expand a workflow into its task DAG and print it"),
    Command("apply", "run_cmds", "validate, plan, store and run a workflow"),
    Command(
        "retry", "run_cmds", "re-run the failed, cancelled and skipped tasks of a finished run"
    ),
    Command("cancel", "run_cmds", "cancel a run"),
    Command("worker", "run_cmds", "serve the store's queue"),
    Command("get", "get_cmds", "show runs"),
    Command("logs", "get_cmds", "print the logs of a run's tasks"),
    Command("report", "report_cmds", "write a run's JUnit XML and Markdown summary"),
    Command("workers", "get_cmds", "list live workers"),
    Command("cron", "cron_cmds", "list, trigger, suspend, resume and delete schedules"),
    Command("scheduler", "serve_cmds", "fire the schedules' due runs (several may run; one leads)"),
    Command("serve", "serve_cmds", "a scheduler and local workers in one process"),
    Command("locks", "cluster_cmds", "list mutexes and semaphores with their holders and waiters"),
    Command("gc", "gc_cmds", "delete finished runs older than a retention (default 7d)"),
    Command("cache", "cache_cmds", "list or remove the cache entries of cached tasks"),
    Command("bench", "bench_cmds", "measure the standard workloads on this store"),
    Command(
        "ui", "ui_cmds", "serve the web dashboard (runs, DAGs, logs, workers, schedules, locks)"
    ),
    Command(
        "health", "health_cmds", "exit 0 when this host's worker or scheduler is live in the store"
    ),
    Command(
        "metrics",
        "metrics_cmds",
        "print the Prometheus metrics, or keep a node_exporter textfile up to date",
    ),
)

EPILOG = """\
exit codes:
  0    success                      1    the run failed
  2    usage error or invalid file  3    store unavailable or bad configuration
  4    gave up waiting (--timeout; the run's tasks go back to the queue)
  5    the run was cancelled
  70   internal error               130/143  interrupted (SIGINT/SIGTERM)

examples:
  runner validate examples/*.yaml
  runner plan examples/diamond.yaml --format text
  runner apply examples/diamond.yaml
  runner get runs
  runner apply workflows/nightly-etl.yaml   # a scheduled workflow: register it
  runner scheduler --workflows workflows/
  runner gc --older-than 30d --dry-run
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `runner` parser. Each command is a stub that knows only its help line, except those of
    `command`'s module, which is imported and adds its full parsers."""
    parser = argparse.ArgumentParser(
        prog="runner",
        description="A workflow-file driven batch runner.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runner {runner.__version__}")
    parser.add_argument("--debug", action="store_true", help="log debug lines and tracebacks")
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"store URL (env {config.ENV_STORE}; default {config.DEFAULT_STORE})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    module = next((c.module for c in COMMANDS if c.name == command), None)
    for entry in COMMANDS:
        if entry.module != module:
            sub.add_parser(entry.name, help=entry.help, add_help=False)
        elif entry.name == command:
            importlib.import_module(f"runner.cli.{module}").add_parsers(sub)
    return parser


def _command_name(argv: Sequence[str] | None) -> str | None:
    """The command `argv` names: parsed by the parser of stubs, which exits on --help, --version
    and usage errors of the global options exactly as the full parser does."""
    known, _rest = build_parser().parse_known_args(argv)
    name: str | None = known.command
    return name


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler so cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _route_signals() -> None:
    """SIGINT (unless ignored, as in a background job) and SIGTERM raise their exceptions
    through runner.interrupts, so the stores' critical parts defer them in the main thread."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        interrupts.install(signal.SIGINT, signal.default_int_handler)
    interrupts.install(signal.SIGTERM, _on_sigterm)


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def entry() -> NoReturn:
    """The `runner` command (and `python -m runner`): `main`, then exit. The process ends
    right after, so the interpreter's last full garbage collections (about 40 ms for what a
    command has loaded) are skipped: `gc.freeze` moves every object out of their reach, and
    reference counting still frees what the exit frees (docs/PERFORMANCE.md, "Fast by
    default")."""
    code = main()
    gc.freeze()
    sys.exit(code)


def _parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace] | int:
    """The parser and the arguments, or the exit code: argparse's (usage errors, --help) or an
    interrupt's. The command's modules load with Ctrl-C and SIGTERM deferred (acted on when
    they have loaded): an extension module's init may drop the exception or crash on it, and
    importlib's lock callbacks drop it (runner.interrupts)."""
    try:
        with interrupts.deferred():
            parser = build_parser(_command_name(argv))
            return parser, parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    except (KeyboardInterrupt, _Terminated) as exc:
        return _stopped(exc)


def _stopped(exc: KeyboardInterrupt | _Terminated) -> int:
    """A Ctrl-C's or a SIGTERM's line and exit code (130, 143)."""
    if isinstance(exc, KeyboardInterrupt):
        print("runner: interrupted", file=sys.stderr)
        return errors.EXIT_SIGINT
    print("runner: terminated", file=sys.stderr)
    return errors.EXIT_SIGTERM


def main(argv: Sequence[str] | None = None) -> int:
    _route_signals()
    parsed = _parse(argv)
    if isinstance(parsed, int):
        return parsed
    parser, args = parsed
    if args.command is None:
        parser.print_help(sys.stderr)
        return errors.EXIT_USAGE
    _setup_logging(args.debug)
    try:
        settings = config.from_env(os.environ, store=args.store)
        code = int(args.func(args, settings))
        interrupts.flush()  # a Ctrl-C dropped where it landed still ends in 130 (interrupts)
        return code
    except errors.RunnerError as exc:
        _print_error(exc, debug=args.debug)
        return exc.exit_code
    except (KeyboardInterrupt, _Terminated) as exc:
        return _stopped(exc)
    except BrokenPipeError:
        return errors.EXIT_OK
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        else:  # its type and message: enough to report a bug seen once
            print(
                f"runner: internal error: {type(exc).__name__}: {exc}"
                " (run with --debug for a traceback)",
                file=sys.stderr,
            )
        return errors.EXIT_INTERNAL


def _print_error(exc: errors.RunnerError, *, debug: bool) -> None:
    if isinstance(exc, errors.WorkflowInvalid):
        print(exc.message, file=sys.stderr)
    else:
        print(f"runner: {exc.message}", file=sys.stderr)
        cause = exc.__cause__
        while cause is not None:
            # a gRPC error's str() is a multi-line dump: print its details() instead
            details = getattr(cause, "details", None)
            print(f"  caused by: {details() if callable(details) else cause}", file=sys.stderr)
            cause = cause.__cause__
    if debug:
        traceback.print_exception(exc)
