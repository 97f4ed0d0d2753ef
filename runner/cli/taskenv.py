"""What tasks get from the process that runs them: the base environment of `runner worker`
(--inherit-env, --pass-env) and the values `--secret NAME` masks (docs/SECURITY.md)."""

from __future__ import annotations

import argparse
import os

from runner import config
from runner.cli import common


def add_secret_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME",
        help="mask the value of environment variable NAME as *** in task logs, outputs and "
        "reports (repeatable; `{fromEnv: ...}` secrets of a workflow are masked anyway)",
    )


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """--secret, and what the worker's tasks inherit: --inherit-env or --pass-env."""
    add_secret_flag(p)
    env = p.add_mutually_exclusive_group()
    env.add_argument(
        "--inherit-env",
        action="store_true",
        help="give tasks this worker's whole environment (default: only "
        f"{', '.join(config.BASE_ENV)} and --pass-env; see docs/SECURITY.md)",
    )
    env.add_argument(
        "--pass-env",
        type=common.names_arg,
        action="extend",
        default=[],
        metavar="NAME,...",
        help="also give tasks these variables of the worker's environment (repeatable)",
    )


def base_env(passed: list[str]) -> dict[str, str]:
    """What `runner worker` tasks start from: the base variables and the --pass-env ones that
    are set, nothing else of the worker's environment (docs/SECURITY.md)."""
    names = (*config.BASE_ENV, *passed)
    return {name: os.environ[name] for name in names if name in os.environ}


def secret_values(args: argparse.Namespace) -> list[str]:
    """The values of the variables `--secret NAME` names that are set (none without it)."""
    return [os.environ[n] for n in getattr(args, "secret", None) or () if os.environ.get(n)]
