"""etcd gc: no key of a deleted run is left under the prefix, a gc interrupted after the
unlink is completed by the next one, and history is compacted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from runner import errors
from runner.models import WorkerInfo
from runner.store import open_store
from runner.store.etcd import EtcdStore
from runner.store.etcd import client as etcd_client
from runner.store.etcd import gc as etcd_gc
from runner.store.etcd.keys import q
from tests import etcd_harness
from tests.contract import plans
from tests.contract.plans import T0, ok

WEEK = 7 * 86_400.0


@pytest.fixture
def store(etcd_server: etcd_harness.Cluster) -> Iterator[EtcdStore]:
    s = open_store(f"{etcd_server.url}/gc-{uuid.uuid4().hex[:12]}/")
    assert isinstance(s, EtcdStore)
    try:
        yield s
    finally:
        s.close()


def _run_keys(store: EtcdStore, run_id: str) -> list[str]:
    """Every key under the prefix that names the run (like `etcdctl get --prefix --keys-only`)."""
    keys = [i.key for i in store.client.scan(store.keys.prefix, keys_only=True)]
    return [k for k in keys if f"/{q(run_id)}/" in k + "/"]


def _finished(store: EtcdStore, run_id: str, *, key: str | None = None) -> None:
    store.create_run(plans.diamond(), run_id=run_id, now=T0, key=key)
    store.register_worker(WorkerInfo(id=f"w-{run_id}", name="w"), now=T0, ttl=600)
    while leases := store.claim(f"w-{run_id}", now=T0):
        for lease in leases:
            store.append_log(lease, "hello\n")
            store.finish(lease, ok(out="x"), now=T0)
    store.deregister_worker(f"w-{run_id}", now=T0)


def test_gc_leaves_no_key_of_the_deleted_run(store: EtcdStore) -> None:
    _finished(store, "old", key="cron:wf:1")
    store.create_run(plans.linear(2), run_id="kept", now=T0)
    assert len(_run_keys(store, "old")) > 10  # run, tasks, done markers, logs, log meta...
    assert store.gc(older_than=WEEK, now=T0 + WEEK + 1) == ["old"]
    assert _run_keys(store, "old") == []
    assert store.client.get(store.keys.run_key("cron:wf:1")) is None
    assert store.client.scan(f"{store.keys.prefix}gc/") == []
    assert _run_keys(store, "kept")


def test_gc_completes_an_interrupted_gc(store: EtcdStore) -> None:
    _finished(store, "old")
    item = store.client.get(store.keys.run("old"))
    assert item is not None
    assert etcd_gc.unlink(store.client, store.keys, "old", item)  # then the process died
    with pytest.raises(errors.RunNotFound):
        store.get_run("old")
    assert _run_keys(store, "old")
    assert store.gc(older_than=WEEK, now=T0 + WEEK + 1) == []
    assert _run_keys(store, "old") == []
    assert store.client.scan(f"{store.keys.prefix}gc/") == []


def test_gc_removes_queue_leftovers_of_the_run(store: EtcdStore) -> None:
    _finished(store, "old")
    stray = store.keys.queue_entry(0, T0, 0, "old", "a")
    store.client.txn([], [etcd_client.put(stray, b"{}")], "a stale queue entry")
    store.gc(older_than=WEEK, now=T0 + WEEK + 1)
    assert store.client.get(stray) is None


def test_compact_compacts_history_below_the_window(store: EtcdStore) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    rev = store.client.revision
    assert etcd_gc.compact(store.client, keep=1) == rev - 1
    assert etcd_gc.compact(store.client, keep=1) == rev - 1  # again: not an error
    assert etcd_gc.compact(store.client, keep=rev + 1) == 0
    assert store.get_run("r1").tasks_total == 1
