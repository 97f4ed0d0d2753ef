"""`runner apply`, `worker`, `get`, `logs`, `cancel`, `retry`."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    """Add this module's commands to the `runner` subparsers."""
    _ = sub
