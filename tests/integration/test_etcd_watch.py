"""The etcd store's watches and chunked submission, against a real etcd: what wakes `wait`,
and a run written in many chunks at once."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from runner import errors
from runner.store import Store
from runner.store.etcd import EtcdStore
from runner.store.etcd import client as c
from runner.store.etcd import gc as etcd_gc
from runner.store.etcd.watch import Watcher
from tests.contract import plans
from tests.contract.plans import T0, claim_one, worker


def _wakes(
    store: EtcdStore, change: Any, *, run_id: str | None = None, within: float = 10.0
) -> bool:
    """Whether a `wait` (for `run_id`) that started before `change()` returns because of it
    within `within` seconds (a wake returns at once; a local watch delivers in milliseconds,
    so the tests that expect none wait 0.5 s)."""
    store.wait(0.0, run_id=run_id)  # watching from here on; earlier changes are spent
    while store.wait(0.2, run_id=run_id):
        pass  # events still arriving from before
    result: list[bool] = []
    ready = threading.Event()

    def body() -> None:
        ready.set()
        result.append(store.wait(within, run_id=run_id))

    thread = threading.Thread(target=body)
    thread.start()
    assert ready.wait(10)
    change()
    thread.join(timeout=within + 10)
    return result == [True]


def _put(store: EtcdStore, key: str) -> None:
    store.client.txn([], [c.put(key, b"{}")], "test put")


def test_wait_wakes_on_queue_entries_runs_and_workers(etcd_store: EtcdStore) -> None:
    keys = etcd_store.keys
    assert _wakes(etcd_store, lambda: _put(etcd_store, keys.queue() + "x"))
    assert _wakes(etcd_store, lambda: _put(etcd_store, keys.run("r9")))
    assert _wakes(etcd_store, lambda: _put(etcd_store, keys.worker("w9")))


def test_wait_sleeps_through_task_records_and_bookkeeping(etcd_store: EtcdStore) -> None:
    keys = etcd_store.keys
    for key in (keys.task("r1", "t1"), keys.held("w1", "r1", "t1"), keys.done("r1", "t1")):
        assert not _wakes(etcd_store, lambda key=key: _put(etcd_store, key), within=0.5), key


def test_a_follower_wakes_on_its_runs_task_records_only(etcd_store: EtcdStore) -> None:
    keys = etcd_store.keys
    assert _wakes(etcd_store, lambda: _put(etcd_store, keys.task("r1", "t1")), run_id="r1")
    assert _wakes(etcd_store, lambda: _put(etcd_store, keys.log("r1", "t1", 1) + "0"), run_id="r1")
    other_run = keys.task("r2", "t1")
    assert not _wakes(etcd_store, lambda: _put(etcd_store, other_run), run_id="r1", within=0.5)


def test_a_worker_wakes_when_another_finishes(etcd_store: EtcdStore, etcd_server: Any) -> None:
    other = EtcdStore.from_url(f"{etcd_server.url}{etcd_store.keys.prefix}")
    try:
        etcd_store.create_run(plans.fan_out(2), run_id="r1", now=T0)
        w = worker(cast(Store, other))
        lease = claim_one(cast(Store, other), w)
        assert _wakes(etcd_store, lambda: other.finish(lease, plans.ok(), now=T0))
    finally:
        other.close()


def test_own_queue_writes_are_claimable_before_the_watch_delivers_them(
    etcd_store: EtcdStore,
) -> None:
    s = cast(Store, etcd_store)
    w = worker(s)
    s.wait(0.0)  # watching
    assert s.claim(w, now=T0) == []  # read the queue empty: later claims skip while unchanged
    etcd_store.create_run(plans.fan_out(1), run_id="r1", now=T0)
    assert [lease.task_id for lease in s.claim(w, now=T0)] == ["t0"]


def test_a_run_of_many_chunks_is_stored_whole(etcd_store: EtcdStore) -> None:
    s = cast(Store, etcd_store)
    n = 1200  # 2 operations a task, 100 a transaction: 24 chunks, 8 at a time
    s.create_run(plans.fan_out(n, priorities=range(n)), run_id="r1", now=T0)
    run = s.get_run("r1")
    assert [t.id for t in run.tasks] == [f"t{i}" for i in range(n)]
    w = worker(s)
    claimed = [lease.task_id for lease in s.claim(w, now=T0, limit=3)]
    assert claimed == [f"t{n - 1}", f"t{n - 2}", f"t{n - 3}"]


def test_a_failed_chunk_fails_the_submission_and_the_run_stays_invisible(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = etcd_store.client.txn
    sent: list[str] = []

    def txn(compare: Any, success: Any, what: str, failure: Any = ()) -> Any:
        sent.append(what)
        if what == "create run tasks" and sent.count(what) == 3:
            raise errors.StoreUnavailable("etcd went away")
        return real(compare, success, what, failure)

    monkeypatch.setattr(etcd_store.client, "txn", txn)
    with pytest.raises(errors.StoreUnavailable):
        etcd_store.create_run(plans.fan_out(1200), run_id="r1", now=T0)
    monkeypatch.undo()
    assert "create run" not in sent  # the run record, last, was never written
    with pytest.raises(errors.RunNotFound):
        etcd_store.get_run("r1")
    assert etcd_store.claim(worker(cast(Store, etcd_store)), now=T0) == []


def test_a_watch_behind_a_compaction_restarts_there_and_counts_a_change(
    etcd_store: EtcdStore,
) -> None:
    keys = etcd_store.keys
    _put(etcd_store, keys.queue() + "a")
    old = etcd_store.client.revision
    _put(etcd_store, keys.queue() + "b")
    _put(etcd_store, keys.queue() + "c")
    etcd_gc.compact(etcd_store.client, keep=1)  # history below the latest revision is gone
    watcher = Watcher(etcd_store.client, keys.prefix)
    try:
        watcher.start(old - 1)  # as a store object whose last read was that old
        assert watcher.wait(0, 10.0)  # the compaction is a change: callers re-read
        seen = watcher.events
        _put(etcd_store, keys.queue() + "d")  # and it watches on from the compaction point
        assert watcher.wait(seen, 10.0)
    finally:
        watcher.close()


def test_a_dropped_watch_resumes_after_the_last_event_it_saw(etcd_store: EtcdStore) -> None:
    keys = etcd_store.keys
    watcher = Watcher(etcd_store.client, keys.prefix)
    try:
        watcher.start(etcd_store.client.revision)
        _put(etcd_store, keys.queue() + "a")
        assert watcher.wait(0, 10.0)
        seen = watcher.events
        watcher._call.cancel()  # the stream drops (as when etcd restarts)
        _put(etcd_store, keys.queue() + "b")  # committed while no stream is open
        assert watcher.wait(seen, 10.0)  # delivered once the watches are recreated
        assert watcher.queue_rev == etcd_store.client.revision
    finally:
        watcher.close()
