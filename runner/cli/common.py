"""Argument types and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING

from runner import errors
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


def parse_params(items: list[str]) -> dict[str, str]:
    """`--param k=v` values as a dict. Raises UsageError naming the bad argument."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise errors.UsageError(f"--param {item!r}: expected NAME=VALUE")
        params[key.strip()] = value
    return params


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
