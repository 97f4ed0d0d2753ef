"""Argument types and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from runner import config, errors
from runner.config import Settings

if TYPE_CHECKING:
    from runner.store import Store

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """`500ms`, `2s`, `5m`, `1h30m`, `7d` or a number of seconds, as seconds. Raises
    ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration (like 500ms, 2s, 5m, 1h30m, 7d or 30)")
    d, h, m, s, ms = match.groups()
    hours = int(d or 0) * 24 + int(h or 0)
    return hours * 3600 + int(m or 0) * 60 + float(s or 0) + int(ms or 0) / 1000


def duration_arg(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def labels_arg(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as a dict."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def names_arg(text: str) -> list[str]:
    """`NAME,NAME,...`: environment variable names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not n.replace("_", "a").isalnum() or n[0].isdigit()]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME,NAME,... of environment variables (letters, digits, '_')"
        )
    return names


def add_param_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="K=V",
        help="set a workflow parameter (repeatable)",
    )
    p.add_argument("--params-file", metavar="FILE", help="a YAML mapping of parameter values")


def add_local_worker_flags(p: argparse.ArgumentParser) -> None:
    """--workers and --lease-ttl of a command that runs its own local workers (apply, retry,
    cron backfill)."""
    p.add_argument(
        "--workers",
        type=non_negative_int,
        metavar="N",
        help="local worker slots (default: CPUs with the embedded store, 0 with etcd)",
    )
    p.add_argument(
        "--lease-ttl",
        type=positive_float,
        metavar="SECONDS",
        help=f"the local workers' lease (env {config.ENV_LEASE_TTL}; default "
        f"{config.DEFAULT_LEASE_TTL:g})",
    )


def parse_params(items: list[str]) -> dict[str, str]:
    """`--param k=v` values as a dict. Raises UsageError naming the bad argument."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise errors.UsageError(f"--param {item!r}: expected NAME=VALUE")
        params[key.strip()] = value
    return params


def runner_cmd(args: argparse.Namespace) -> str:
    """`runner`, with the `--store URL` it was given: the prefix of a command to suggest."""
    store = getattr(args, "store", None)
    return f"runner --store {store}" if store else "runner"


def store_place(settings: Settings) -> str:
    """The store the settings name, for a message: its URL, and where a SQLite file is."""
    url = settings.store
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return f"{url} ({os.path.abspath(url[len('sqlite:///') :])})"
    return url


def choose_store_hint() -> str:
    return f"choose another store with --store URL or {config.ENV_STORE}"


def empty_note(what: str, settings: Settings) -> str:
    """`no runs in sqlite:///... (/abs/path); choose another store with ...`: what an empty
    listing says, so that a listing read from the wrong store does not pass for the truth."""
    return f"no {what} in {store_place(settings)}; {choose_store_hint()}"


def open_existing_store(settings: Settings, *, run: str | None = None) -> Store:
    """The store, for a command that only reads (or changes what must already be there): a
    SQLite file that does not exist is not created. Raises NoStore naming it, or, for a
    command about `run`, RunNotFound (exit 2, as for a store without that run)."""
    url = settings.store
    sqlite = url.startswith("sqlite:///") and len(url) > len("sqlite:///")
    if sqlite and not os.path.exists(url[len("sqlite:///") :]):
        why = (
            f"no store at {store_place(settings)}: nothing has run with this store yet "
            f"(a relative path is read from the current folder); {choose_store_hint()}"
        )
        if run is not None:
            raise errors.RunNotFound(run, f"run {run!r} not found: {why}")
        raise errors.NoStore(url, why)
    return open_settings_store(settings)


def open_settings_store(settings: Settings) -> Store:
    """The store the settings name, with their log limit, failpoints and etcd credentials."""
    # gRPC's C core logs TLS handshake failures line by line on stderr; runner reports the
    # failure itself. GRPC_VERBOSITY=debug (or any value) set by the user still wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from runner import store  # not for `runner validate` and `runner plan`

    return store.open_store(
        settings.store,
        log_limit=settings.log_limit,
        failpoints=settings.failpoints,
        etcd_user=settings.etcd_user,
        etcd_password=settings.etcd_password,
    )


STORE_WAIT_MAX = 5.0  # seconds between tries while a network store does not answer


def one_machine(settings: Settings) -> bool:
    """Whether every worker of the store runs on this machine: the embedded store (one SQLite
    file, one host). There, a workflow's relative paths resolve against its file's folder; on
    etcd (a cluster) tasks run in their worker's folder unless `workdir:` says otherwise
    (docs/WORKFLOW.md, "Where paths resolve")."""
    return settings.store.startswith("sqlite:")


def wait_for_store(settings: Settings, *, who: str) -> None:
    """Block until a network store (etcd) answers, retrying with a line on stderr each try.

    Long-running processes (worker, scheduler, serve) may start before their etcd does
    (compose, systemd, a rebooting host): they wait for it rather than exit. SIGTERM or Ctrl-C
    still ends the wait. The embedded store opens at once or fails for a reason waiting does
    not cure (a bad path), so it is not waited for.
    """
    if not settings.store.startswith(("etcd://", "etcds://")):
        return
    delay = 0.5
    while True:
        try:
            store = open_settings_store(settings)
            try:
                store.leader(now=time.time())
                return
            finally:
                store.close()
        except errors.StoreUnavailable as exc:
            print(
                f"runner {who}: waiting for the store: {exc.message}; retrying in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(delay)
        delay = min(delay * 2, STORE_WAIT_MAX)
