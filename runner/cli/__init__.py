"""The `runner` command line: a thin layer over the library API.

`main` is the single error boundary: a RunnerError prints its message to stderr and returns its
exit code (see runner.errors); anything else returns 70, with a traceback only under --debug.
Each command group lives in its own module and adds itself through `add_parsers(subparsers)`;
each command is a function `cmd_<name>(args, settings) -> int`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

import runner
from runner import config, errors
from runner.cli import (
    bench_cmds,
    cluster_cmds,
    cron_cmds,
    gc_cmds,
    get_cmds,
    health_cmds,
    run_cmds,
    workflow_cmds,
)

EPILOG = """\
exit codes:
  0    success                      1    the run failed
  2    usage error or invalid file  3    store unavailable or bad configuration
  4    gave up waiting (--timeout)  5    the run was cancelled
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


def build_parser() -> argparse.ArgumentParser:
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
    workflow_cmds.add_parsers(sub)
    run_cmds.add_parsers(sub)
    get_cmds.add_parsers(sub)
    cron_cmds.add_parsers(sub)
    cluster_cmds.add_parsers(sub)
    gc_cmds.add_parsers(sub)
    bench_cmds.add_parsers(sub)
    health_cmds.add_health_parser(sub)
    return parser


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler so cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return errors.EXIT_USAGE
    _setup_logging(args.debug)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        settings = config.from_env(os.environ, store=args.store)
        return int(args.func(args, settings))
    except errors.RunnerError as exc:
        _print_error(exc, debug=args.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        return errors.EXIT_SIGINT
    except _Terminated:
        print("runner: terminated", file=sys.stderr)
        return errors.EXIT_SIGTERM
    except BrokenPipeError:
        return errors.EXIT_OK
    except Exception:
        if args.debug:
            traceback.print_exc()
        else:
            print(
                "runner: internal error (run with --debug for a traceback)",
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
