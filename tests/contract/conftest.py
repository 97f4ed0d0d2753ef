"""The contract suite runs unchanged against every backend: fixture params ["sqlite", "etcd"].

The modules about dependencies and finishing (test_store, test_store_semantics) add
"etcd-wide", which stores every task that has dependencies as a wide task (arrivals counted,
see runner.store.etcd.flow.arrive): a path otherwise taken only by tasks with more than
`flow.WIDE` dependencies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.store import Store, open_store
from runner.store.etcd import flow as etcd_flow

BACKENDS = ["sqlite", "etcd"]
WITH_WIDE = [*BACKENDS, "etcd-wide"]


def url_for(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL of an empty store of backend `request.param`; more store objects can be opened on
    it (threads, processes)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    if request.param == "etcd-wide":
        monkeypatch.setattr(etcd_flow, "WIDE", 0)
    server = request.getfixturevalue("etcd_server")  # session fixture, tests/conftest.py
    return f"{server.url}/runner-test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture(params=BACKENDS)
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    return url_for(request, tmp_path, monkeypatch)


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
