"""An etcd lease that expires before a write needing it, and a read after the store closed,
are store errors wherever they land."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from runner import errors
from runner.store.etcd import EtcdStore
from tests.contract.plans import T0


def test_a_dispatch_put_on_an_expired_election_lease_is_a_store_error(etcd_server: Any) -> None:
    """The scheduler writes `cluster/dispatch` on its election lease right after it wins; a
    lease that expired in between (the process stalled past its TTL) raised a bare exception
    that ended the scheduler thread. As a StoreError the scheduler reports it, stands by and
    campaigns again."""
    store = EtcdStore.from_url(f"{etcd_server.url}/runner-lease-{uuid.uuid4().hex[:12]}/")
    try:
        assert store.campaign("sched-a", now=T0, ttl=10.0)
        store.client.revoke(store._election.lease_of("sched-a"))  # as its expiry does
        with pytest.raises(errors.StoreError, match="lease expired before the write"):
            store.set_dispatch("sched-a", "pull", now=T0)
    finally:
        store.close()


def test_a_read_after_close_is_a_store_error(etcd_server: Any) -> None:
    """`runner apply`'s "waiting" thread can outlive its stop by a read while the store
    closes (its join gives up after 1 s under load); grpc's ValueError then printed
    "Exception in thread waiting" with a traceback (seen once in CI)."""
    store = EtcdStore.from_url(f"{etcd_server.url}/runner-closed-{uuid.uuid4().hex[:12]}/")
    store.list_runs()
    store.close()
    with pytest.raises(errors.StoreError, match="used after close"):
        store.list_runs()
