"""Two submissions of one run id at once (two backfills of a tick, a backfill and the
scheduler): one at a time writes the run's task chunks (it holds `creating/{run}` on a short
lease), the other reports RunExists, and the run keeps every task claimable once; a creator
that died blocks a later creation of its run id only until its lease expires."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner import errors
from runner.models import StreamedTasks
from runner.store.etcd import EtcdStore, runs
from tests.contract import plans
from tests.contract.plans import worker

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0  # the creation lease in these tests (etcd's minimum with the fixtures' timings)


def claim_all(store: EtcdStore) -> list[str]:
    """The task ids one worker claims until the queue has nothing more for it."""
    w = worker(store, "w")
    claimed: list[str] = []
    while batch := store.claim(w, now=time.time() + 1, limit=1000):
        claimed += [lease.task_id for lease in batch]
    return claimed


def test_a_submission_that_finds_the_run_stored_between_its_chunks_reports_it_exists(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalls after its first chunk, past its creation lease; B takes the key, clears A's
    chunk and stores the run; A's next chunk fails its compare on the key: RunExists."""
    other = EtcdStore(etcd_store.client.conn, prefix=etcd_store.keys.prefix)  # another process
    plan = plans.fan_out(250)  # three chunks of at most runs.MAX_OPS operations
    first_chunk_done = threading.Event()
    real_write = runs._Chunks._write

    def write(chunks: Any, batch: Any) -> list[str]:
        written = real_write(chunks, batch)
        if not first_chunk_done.is_set():  # the other submission stores the whole run now
            first_chunk_done.set()
            other.create_run(plan, run_id="r1", now=time.time())
        return written

    monkeypatch.setattr(runs._Chunks, "_write", write)
    monkeypatch.setattr(runs, "IN_FLIGHT", 1)  # one chunk at a time: the race lands between
    monkeypatch.setattr(runs, "CREATE_TTL", LEASE)
    try:
        with pytest.raises(errors.RunExists):
            etcd_store.create_run(plan, run_id="r1", now=time.time())
        monkeypatch.undo()
        assert sorted(claim_all(other)) == sorted(t.id for t in plan.tasks)  # each once
        assert other.client.count(other.keys.queue()) == 0  # A's first chunk was cleared
    finally:
        other.close()


def test_two_submissions_whose_chunks_interleave_before_either_stores_the_run(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B writes every chunk, A writes its chunks over B's, then B stores the run and A loses
    at the run record: without the creation key A's records named A's queue entries, which
    A's undo deleted (those tasks were never claimable) and B's entries were left stale."""
    winner = EtcdStore(etcd_store.client.conn, prefix=etcd_store.keys.prefix)  # B
    plan = plans.fan_out(120)  # three chunks
    b_chunks_done, a_chunks_done, b_created = (threading.Event() for _ in range(3))
    real_wait = runs._Chunks.wait

    def wait(chunks: Any) -> list[str]:
        written = real_wait(chunks)
        if chunks.client is winner.client:
            b_chunks_done.set()
            a_chunks_done.wait(2)  # A's chunks land now, unless A cannot write any
        else:
            a_chunks_done.set()
            b_created.wait(10)  # B stores the run first
        return written

    def create_b() -> None:
        try:
            winner.create_run(plan, run_id="r1", now=time.time())
        finally:
            b_created.set()

    monkeypatch.setattr(runs._Chunks, "wait", wait)
    b = threading.Thread(target=create_b)
    b.start()
    try:
        assert b_chunks_done.wait(10)
        with pytest.raises(errors.RunExists):
            etcd_store.create_run(plan, run_id="r1", now=time.time() + 0.001)
        b.join(10)
        monkeypatch.undo()
        assert [r.id for r in winner.list_runs()] == ["r1"]
        assert sorted(claim_all(winner)) == sorted(t.id for t in plan.tasks)  # each once
        assert winner.client.count(winner.keys.queue()) == 0  # no stale entry left behind
    finally:
        b.join(10)
        winner.close()


_DIES = textwrap.dedent(
    """
    import sys, time
    from runner.failpoints import Failpoints
    from runner.store.etcd import EtcdStore, runs
    from tests.contract import plans

    runs.CREATE_TTL = float(sys.argv[2])
    store = EtcdStore.from_url(sys.argv[1], failpoints=Failpoints(sys.argv[3]))
    store.create_run(plans.fan_out(120, priorities=[5] * 120), run_id="r1", now=time.time())
    """
)


def test_a_creator_killed_before_storing_the_run_blocks_its_run_id_only_until_its_lease_ends(
    etcd_store: EtcdStore, etcd_server: Any
) -> None:
    """kill -9 after every chunk, before the run record: its task records and queue entries
    stay (invisible: no run record), its creation key until its lease expires. A later
    creation of the run id, with another plan, waits for that, clears them and stores its own:
    every task of it claimable once, nothing of the dead one left."""
    url = f"{etcd_server.url}/{etcd_store.keys.prefix.strip('/')}/"
    died = subprocess.run(
        [sys.executable, "-c", _DIES, url, str(LEASE), "create_run.before_commit=crash"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()
    keys = etcd_store.keys
    assert etcd_store.client.get(keys.creating("r1")) is not None  # until its lease expires
    assert etcd_store.client.count(keys.task("r1")) == 120
    plan = plans.fan_out(60)  # other task ids matter too: t60..t119 must not linger
    started = time.monotonic()
    etcd_store.create_run(plan, run_id="r1", now=time.time())
    waited = time.monotonic() - started
    print(f"creation after a dead creator: {waited:.2f} s (creation lease {LEASE:g} s)")
    assert waited < LEASE + 5  # waited for the lease, not forever
    assert etcd_store.client.get(keys.creating("r1")) is None
    assert [t.id for t in etcd_store.get_run("r1").tasks] == [t.id for t in plan.tasks]
    assert etcd_store.client.count(keys.queue()) == 60  # the dead creator's entries are gone
    assert sorted(claim_all(etcd_store)) == sorted(t.id for t in plan.tasks)  # each once


def test_a_submission_that_loses_the_idempotency_key_clears_what_it_wrote(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two run ids with one key (each holds its own creation key): the one whose last
    transaction finds the key taken reports RunExists naming the other run and deletes its own
    task records and queue entries (250 roots: more than one transaction may delete)."""
    other = EtcdStore(etcd_store.client.conn, prefix=etcd_store.keys.prefix)
    plan = plans.fan_out(250)
    real_write = runs._Chunks._write
    stored = threading.Event()

    def write(chunks: Any, batch: Any) -> list[str]:
        written = real_write(chunks, batch)
        if chunks.client is etcd_store.client and not stored.is_set():
            stored.set()
            other.create_run(plan, run_id="r2", now=time.time(), key="k")
        return written

    monkeypatch.setattr(runs._Chunks, "_write", write)
    try:
        with pytest.raises(errors.RunExists) as lost:
            etcd_store.create_run(plan, run_id="r1", now=time.time(), key="k")
        monkeypatch.undo()
        assert lost.value.run_id == "r2"
        keys = etcd_store.keys
        assert etcd_store.client.count(keys.task("r1")) == 0
        assert etcd_store.client.get(keys.creating("r1")) is None
        assert etcd_store.client.count(keys.queue()) == 250  # r2's
        assert sorted(claim_all(other)) == sorted(t.id for t in plan.tasks)
    finally:
        other.close()


def test_a_run_beyond_the_etcd_task_limit_is_refused_before_anything_is_made(
    etcd_store: EtcdStore,
) -> None:
    def make() -> Any:
        raise AssertionError("the plan's tasks were made")

    big = dataclasses.replace(plans.plan(), tasks=StreamedTasks(make, runs.MAX_TASKS + 1))
    with pytest.raises(errors.UsageError, match="at most 200,000 in one run") as info:
        etcd_store.create_run(big, run_id="big", now=plans.T0)
    assert info.value.exit_code == errors.EXIT_USAGE
    assert etcd_store.list_runs() == []
    assert etcd_store.client.scan(etcd_store.keys.prefix) == []
