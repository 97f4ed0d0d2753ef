"""`runner validate` and `runner plan`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Add this module's commands to the `runner` subparsers."""
    _ = (sub, argparse)
