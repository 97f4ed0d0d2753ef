"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli


@pytest.fixture(autouse=True)
def _reap_started_processes() -> Iterator[None]:
    """Kill what a test started and left running (a failed test stops half-way), so its
    processes neither outlive it nor surface as ResourceWarnings in a later test."""
    yield
    while Cli.live:
        proc = Cli.live.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(params=["sqlite", "etcd"])
def any_store_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """The CLI in a scratch folder on each store in turn: the same behaviour on both (with
    etcd, `runner apply` runs no local workers unless told to with --workers)."""
    if request.param == "sqlite":
        return Cli(tmp_path)
    server: Any = request.getfixturevalue("etcd_server")
    return Cli(tmp_path, store=f"{server.url}/e2e-{uuid.uuid4().hex[:8]}/")
