"""SQLite-only behaviour of SqliteStore: files, faults, schema versions, failpoints, the plan."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from runner import errors
from runner.models import Lease, RunState
from runner.store import open_store, sqlite
from runner.store.sqlite import checkpoint, claim, rows, schema
from tests.contract import plans
from tests.contract.plans import T0, claim_one, ok, states, worker


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_open_creates_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    store = open_store(_url(path))
    store.close()
    assert path.is_file()


def test_open_non_database_file_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(errors.StoreUnavailable) as info:
        open_store(_url(path))
    assert str(path) in info.value.message
    assert "not a runner store or is corrupt" in info.value.message
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert path.read_text().startswith("hello")  # left as it was


def test_open_corrupt_store_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(_url(path))
    store.create_run(plans.fan_out(200), run_id="r1", now=T0)
    store.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    path.write_bytes(bytes(data))
    with pytest.raises(errors.StoreUnavailable) as info:
        open_store(_url(path))
    assert str(path) in info.value.message
    assert isinstance(info.value.__cause__, sqlite3.Error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_open_unreadable_file_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(_url(path)).close()
    path.chmod(0)
    with pytest.raises(errors.StoreUnavailable) as info:
        open_store(_url(path))
    assert str(path) in info.value.message


def test_open_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(_url(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(errors.StoreUnavailable) as info:
        open_store(_url(path))
    assert "schema version 99 is newer" in info.value.message


def test_open_sets_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(_url(path)).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(schema.SCHEMA_VERSION),
        )
    finally:
        db.close()


def test_full_disk_fails_visibly_and_keeps_what_was_stored(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = sqlite.SqliteStore(str(path))
    store.create_run(plans.linear(3), run_id="small", now=T0)
    db = store.db.connection()
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk filled up
    with pytest.raises(errors.StoreError) as info:
        store.create_run(plans.fan_out(2000), run_id="big", now=T0)
    assert "disk is full" in info.value.message
    assert str(path) in info.value.message
    assert store.get_run("small").tasks_total == 3
    store.close()
    reopened = open_store(_url(path))
    try:
        assert states(reopened, "small") == {"t0": "ready", "t1": "pending", "t2": "pending"}
        with pytest.raises(errors.RunNotFound):
            reopened.get_run("big")
    finally:
        reopened.close()


def test_use_after_close_raises_store_error(tmp_path: Path) -> None:
    store = open_store(_url(tmp_path / "state.db"))
    store.close()
    with pytest.raises(errors.StoreError, match="after close"):
        store.list_runs()


def test_a_threads_first_wait_counts_a_commit_another_thread_of_the_object_read(
    tmp_path: Path,
) -> None:
    """A worker's idle thread waits for its claim loop, which looked at the store before a run
    was submitted; the heartbeat's transaction read the submit first. The idle thread's first
    wait must not take the object's latest read as what it has seen: it slept through the
    submit (until the next commit or 0.5 s) in about 1 of 20 W4 runs."""
    url = _url(tmp_path / "state.db")
    worker_store, submitter = open_store(url), open_store(url)
    try:
        worker_store.list_runs()  # the claim loop looks: nothing yet
        submitter.create_run(plans.linear(1), run_id="r1", now=T0)
        worker_store.list_runs()  # the heartbeat's transaction reads the commit
        result: list[bool] = []

        def idle() -> None:  # its first wait, then one with nothing new: the timeout
            result.extend([worker_store.wait(20.0), worker_store.wait(0.05)])

        thread = threading.Thread(target=idle)
        thread.start()
        thread.join(timeout=30)
        assert result == [True, False]
    finally:
        worker_store.close()
        submitter.close()


def test_an_interrupt_just_after_the_schema_commits_is_an_interrupt(tmp_path: Path) -> None:
    """A Ctrl-C landing after the schema's COMMIT (as `runner apply` opens a new store) made
    the cleanup's ROLLBACK fail: exit 3, "cannot rollback - no transaction is active"."""
    path = str(tmp_path / "state.db")
    conn = sqlite3.connect(path, isolation_level=None)

    class InterruptedAfterCommit:
        """The real connection, with a KeyboardInterrupt raised just after its COMMIT."""

        def __getattr__(self, name: str) -> object:
            return getattr(conn, name)

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            cur = conn.execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return cur

    try:
        with pytest.raises(KeyboardInterrupt):
            schema._ensure_schema(cast(sqlite3.Connection, InterruptedAfterCommit()), path)
    finally:
        conn.close()
    store = open_store(_url(tmp_path / "state.db"))  # the schema was stored whole
    store.close()


def test_failpoint_before_claim_commit_claims_nothing(tmp_path: Path) -> None:
    url = _url(tmp_path / "state.db")
    faulty = open_store(url, failpoints="claim.before_commit=error")
    try:
        faulty.create_run(plans.linear(1), run_id="r1", now=T0)
        with pytest.raises(errors.StoreUnavailable, match=r"claim\.before_commit"):
            faulty.claim(worker(faulty), now=T0)
        assert states(faulty, "r1") == {"t0": "ready"}
        assert faulty.get_run("r1").tasks[0].attempts == ()
    finally:
        faulty.close()


def test_failpoint_before_finish_commit_records_nothing(tmp_path: Path) -> None:
    url = _url(tmp_path / "state.db")
    faulty = open_store(url, failpoints="finish.before_commit=error")
    try:
        faulty.create_run(plans.linear(2), run_id="r1", now=T0)
        lease = claim_one(faulty, worker(faulty))
        with pytest.raises(errors.StoreUnavailable, match=r"finish\.before_commit"):
            faulty.finish(lease, ok(), now=T0)
        assert states(faulty, "r1") == {"t0": "running", "t1": "pending"}
    finally:
        faulty.close()


def test_failpoint_after_finish_commit_keeps_the_result(tmp_path: Path) -> None:
    url = _url(tmp_path / "state.db")
    faulty = open_store(url, failpoints="finish.after_commit=error")
    try:
        faulty.create_run(plans.linear(1), run_id="r1", now=T0)
        lease = claim_one(faulty, worker(faulty))
        with pytest.raises(errors.StoreUnavailable):
            faulty.finish(lease, ok(), now=T0)
        assert faulty.get_run("r1").state is RunState.SUCCEEDED
    finally:
        faulty.close()


def test_claim_query_walks_the_queue_index(tmp_path: Path) -> None:
    store = sqlite.SqliteStore(str(tmp_path / "state.db"))
    try:
        db = store.db.connection()
        sql = "EXPLAIN QUERY PLAN " + claim.CLAIMABLE
        plan = " ".join(str(row[-1]) for row in db.execute(sql, (T0,)))
        assert "USING INDEX tasks_queue" in plan
        assert "TEMP B-TREE" not in plan  # no sort: the index gives the order
    finally:
        store.close()


def test_finishes_waiting_for_the_lock_commit_together_and_a_stale_one_fails_alone(
    tmp_path: Path,
) -> None:
    store = sqlite.SqliteStore(str(tmp_path / "s.db"))
    try:
        store.create_run(plans.fan_out(4), run_id="r1", now=T0)
        w = worker(store)
        first, *rest = store.claim(w, now=T0, limit=4)
        store.finish(first, ok(), now=T0)  # `first` is stale from here on
        results: dict[str, object] = {}

        def finish(lease: Lease) -> None:
            try:
                results[lease.task_id] = store.finish(lease, ok(n=lease.task_id), now=T0)
            except errors.LeaseLost as exc:
                results[lease.task_id] = exc

        commits = store.db.commits
        threads = [threading.Thread(target=finish, args=(x,)) for x in (*rest, first)]
        with store.db.lock:  # hold the store while all four queue up behind it
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while store.group.queued() < 4:
                assert time.monotonic() < deadline, "the finishes did not queue up"
                time.sleep(0.001)
        for t in threads:
            t.join()
        assert store.db.commits == commits + 1  # one transaction for all four
        assert isinstance(results["t0"], errors.LeaseLost)
        assert [results[x.task_id] for x in rest] == [[], [], []]
        run = store.get_run("r1")
        assert run.state is RunState.SUCCEEDED
        assert {t.id: t.outputs for t in run.tasks} == {
            "t0": {},
            **{x.task_id: {"n": x.task_id} for x in rest},
        }
        assert all(len(t.attempts) == 1 for t in run.tasks)
    finally:
        store.close()


def test_writer_lock_waits_for_its_holder_and_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    holder = checkpoint.WriterLock(path, timeout=30)
    waiter = checkpoint.WriterLock(path, timeout=0.2)
    try:
        with holder.held(True):
            with pytest.raises(errors.StoreUnavailable) as info, waiter.held(True):
                pass
            assert "held its write lock" in info.value.message
            with waiter.held(False):  # readers never take it
                pass
        acquired, release, got = threading.Event(), threading.Event(), threading.Event()

        def hold() -> None:
            with holder.held(True):
                acquired.set()
                release.wait(10)

        def wait_for_it() -> None:
            with checkpoint.WriterLock(path, timeout=30).held(True):
                got.set()

        threads = [threading.Thread(target=hold), threading.Thread(target=wait_for_it)]
        threads[0].start()
        assert acquired.wait(10)
        threads[1].start()
        assert not got.wait(0.1)  # still queued behind the holder
        release.set()
        assert got.wait(10)  # and in once it let go
        for t in threads:
            t.join()
    finally:
        holder.close()
        waiter.close()


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**70 + 1, "neg": -(2**64), "edge": [2**63 - 1, 2**64 - 1, -(2**63)]},
        {"float": 12345678901234567890.0, "small": 0.1, "exp": 1e-300},
        {"nan": float("nan"), "inf": float("-inf")},
        {"lone surrogate": "\ud800x", "unicode": "é\u2028\x00"},
        {"nested": {"with": [1, "2", None, True, {"k": "v"}]}},
    ],
)
def test_json_columns_read_back_what_json_wrote(value: object) -> None:
    """`rows.parse` (orjson where it agrees) gives what json.loads gives, exactly: a
    big integer stays an integer, NaN and lone surrogates are read."""
    text = json.dumps(value)
    parsed = rows.parse(text)
    assert json.dumps(parsed) == text
    assert repr(parsed) == repr(json.loads(text))
