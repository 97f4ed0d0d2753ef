"""Fixtures of the integration tests that need a store object on the session's real etcd."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runner.store.etcd import EtcdStore


@pytest.fixture
def etcd_store(etcd_server: Any) -> Iterator[EtcdStore]:
    """An etcd store object on a fresh key prefix of the session's etcd server."""
    s = EtcdStore.from_url(f"{etcd_server.url}/runner-unit-{uuid.uuid4().hex[:12]}/")
    try:
        yield s
    finally:
        s.close()
