"""Periodic compaction on etcd (`store/etcd/compaction.py`): a long run makes the workers
compact etcd's history, the run still ends with every task run exactly once, followers
watching through the compaction see the end, and `?compact=off` leaves history alone.

The thresholds are lowered so that a run of a few hundred tasks is "long"; each test starts
an etcd of its own, so no other test's compaction is counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner import bench, engine, errors
from runner.models import Run, RunState, TaskState
from runner.store import open_store
from runner.store.etcd import EtcdStore, compaction, gc
from runner.store.etcd import client as etcd_client
from tests import etcd_harness

TASKS = 300


@pytest.fixture
def often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check every 10 claimed entries, compact every 40; any proposal is old enough."""
    monkeypatch.setattr(compaction, "CHECK_CLAIMS", 10)
    monkeypatch.setattr(compaction, "INTERVAL", 40)
    monkeypatch.setattr(compaction, "MIN_AGE", 0.0)


def _open(url: str) -> EtcdStore:
    store = open_store(url)
    assert isinstance(store, EtcdStore)
    return store


def _history_from(store: EtcdStore, revision: int) -> bool:
    """Whether etcd still has the history at `revision` (not compacted away)."""
    try:
        store.client.scan_at(store.keys.prefix, revision=revision)
    except etcd_client.Compacted:
        return False
    return True


def _serve(url: str, tmp_path: Path, follow: Callable[[str], None] | None = None) -> Run:
    """Run TASKS independent no-ops with an in-process worker (its store closed at the end,
    so its compactions have finished); `follow(run_id)` runs in a thread meanwhile."""
    followers: list[threading.Thread] = []
    with bench.serving(url, slots=2, log_dir=str(tmp_path), processes=0) as store:
        run = engine.submit(store, bench.independent(TASKS), now=time.time())
        if follow is not None:
            followers.append(threading.Thread(target=follow, args=(run.id,), daemon=True))
            followers[0].start()
        engine.follow(store, run.id, tasks=False)
        ended = store.get_run(run.id)
    for thread in followers:
        thread.join(60)
        assert not thread.is_alive()
    return ended


def _exactly_once(run: Run) -> None:
    assert run.state is RunState.SUCCEEDED
    assert len(run.tasks) == TASKS
    assert all(t.state is TaskState.SUCCEEDED for t in run.tasks)
    assert all(len(t.attempts) == 1 for t in run.tasks)


def test_a_long_run_compacts_and_ends_with_each_task_run_once(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster], often: None, tmp_path: Path
) -> None:
    url = f"{etcd_cluster_factory(1).url}/compact/"
    stale, live = _open(url), _open(url)
    seen: list[Run] = []
    try:
        stale.list_runs()  # its last read: a revision the run's compactions pass
        before = stale.client.revision
        assert _history_from(stale, before)

        def follow(run_id: str) -> None:  # a follower watching while the run goes on
            seen.append(engine.follow(live, run_id, tasks=False, poll=30.0))

        run = _serve(url, tmp_path, follow)
        _exactly_once(run)
        assert not _history_from(stale, before)  # the worker compacted past it
        assert len(seen) == 1
        assert seen[0].state is RunState.SUCCEEDED
        # A follower whose watch starts behind the compaction restarts there, counts it
        # as a change, and reads the run's end.
        assert stale.wait(30.0, run_id=run.id)
        _exactly_once(stale.get_run(run.id))
    finally:
        stale.close()
        live.close()


def test_compact_off_leaves_history_alone(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster], often: None, tmp_path: Path
) -> None:
    url = f"{etcd_cluster_factory(1).url}/compact/?compact=off"
    reader = _open(url)
    try:
        reader.list_runs()
        before = reader.client.revision
        _exactly_once(_serve(url, tmp_path))
        assert _history_from(reader, before)
    finally:
        reader.close()


def test_a_paged_read_behind_a_compaction_reads_again_at_a_newer_revision(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster],
) -> None:
    store = _open(f"{etcd_cluster_factory(1).url}/compact/")
    try:
        keys = [f"{store.keys.prefix}k/{i:03d}" for i in range(30)]
        for key in keys:
            store.client.txn([], [etcd_client.put(key, b"1")], "test")
        first = store.client.revision
        store.client.txn([], [etcd_client.delete(keys[0])], "test")
        gc.compact_to(store.client, store.client.revision)
        gc.compact_to(store.client, store.client.revision)  # again: not an error
        with pytest.raises(etcd_client.Compacted):
            store.client.scan_at(store.keys.prefix, revision=first)
        items, at = store.client.scan_at(store.keys.prefix, page=7)
        assert [i.key for i in items] == keys[1:]
        assert at > first
    finally:
        store.close()


def test_compact_takes_on_or_off_only() -> None:
    with pytest.raises(errors.ConfigError, match="compact"):
        open_store("etcd://127.0.0.1:1/x/?compact=sometimes")


def test_a_check_compacts_to_the_previous_proposal_after_an_interval_of_claims(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "INTERVAL", 100)
    url = f"{etcd_cluster_factory(1).url}/compact/"
    store, other = _open(url), _open(url)
    key = store.keys.compaction()
    try:
        for value in (b"1", b"2"):
            store.client.txn([], [etcd_client.put(f"{store.keys.prefix}x", value)], "test")
        first = store.client.revision
        assert compaction.check(store.client, key, 60) == 0  # the first check only proposes
        assert compaction.check(other.client, key, 60) == 0  # 60 claims counted: too few
        monkeypatch.setattr(compaction, "MIN_AGE", 3600.0)
        assert compaction.check(other.client, key, 60) == 0  # 120, but proposed too recently
        assert _history_from(store, first)
        monkeypatch.setattr(compaction, "MIN_AGE", 0.0)
        assert compaction.check(other.client, key, 1) == first  # any process: the proposal
        assert not _history_from(store, first - 1)
        assert _history_from(store, first)  # one interval of history is kept
        assert compaction.check(store.client, key, 99) == 0  # a new interval begins
        assert compaction.check(store.client, key, 1) > first
    finally:
        store.close()
        other.close()
