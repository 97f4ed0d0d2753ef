"""The contract suite runs unchanged against every backend: fixture params ["sqlite", "etcd"]."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.store import Store, open_store


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store; more store objects can be opened on it (threads, processes)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("etcd_server")  # session fixture, tests/conftest.py
    return f"{server.url}/runner-test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stores(store_url: str) -> Iterator[list[Store]]:
    """Four store objects on one backing store, as four processes or threads would open."""
    opened = [open_store(store_url) for _ in range(4)]
    try:
        yield opened
    finally:
        for s in opened:
            s.close()
