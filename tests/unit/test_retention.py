"""The leading scheduler's retention: `Collector` deletes old finished runs, only while leading."""

from __future__ import annotations

import threading
from pathlib import Path

from runner.cron.retention import Collector
from runner.cron.scheduler import Scheduler
from runner.models import WorkerInfo
from runner.store.sqlite import SqliteStore
from tests.contract import plans
from tests.contract.plans import T0, ok

WEEK = 7 * 86_400.0


def _finished(store: SqliteStore, run_id: str, *, at: float) -> None:
    store.create_run(plans.linear(1), run_id=run_id, now=at)
    store.register_worker(WorkerInfo(id="w", name="w"), now=at, ttl=60)
    (lease,) = store.claim("w", now=at)
    store.finish(lease, ok(), now=at)
    store.deregister_worker("w", now=at)


def test_collect_deletes_old_finished_runs_and_reports(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    _finished(store, "old", at=T0)
    _finished(store, "young", at=T0 + WEEK)
    said: list[str] = []
    collector = Collector(store, older_than=WEEK, report=said.append)
    assert collector.collect(T0 + WEEK + 1) == ["old"]
    assert said == ["gc: deleted 1 run(s) finished before 2023-11-14T22:13:21Z"]
    assert collector.collect(T0 + WEEK + 1) == []
    assert said == ["gc: deleted 1 run(s) finished before 2023-11-14T22:13:21Z"]
    store.close()


def test_run_collects_only_while_leading_and_stops(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    _finished(store, "old", at=T0)
    deleted = threading.Event()
    checks: list[bool] = []

    def leading() -> bool:
        checks.append(True)
        return len(checks) > 2  # a standby twice, then the leader

    def report(_text: str) -> None:
        deleted.set()

    collector = Collector(store, older_than=WEEK, every=0.01, first_after=0.0, report=report)
    stop = threading.Event()
    thread = collector.start(stop, leading=leading, clock=lambda: T0 + WEEK + 1)
    assert deleted.wait(10)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(checks) >= 3
    assert store.list_runs() == []
    store.close()


def test_run_reports_store_errors_and_goes_on(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    store.close()  # every gc now fails with StoreError
    said: list[str] = []
    second = threading.Event()

    def report(text: str) -> None:
        said.append(text)
        if len(said) == 2:
            second.set()

    collector = Collector(store, every=0.01, first_after=0.0, report=report)
    stop = threading.Event()
    thread = collector.start(stop, leading=lambda: True, clock=lambda: T0)
    assert second.wait(10)
    stop.set()
    thread.join(10)
    assert said[0].startswith("gc: store ")
    assert "used after close()" in said[0]


def test_scheduler_gc_disabled_with_zero(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    assert Scheduler(store, candidate="c", gc_older_than=0).collector is None
    collector = Scheduler(store, candidate="c").collector
    assert collector is not None
    assert collector.older_than == WEEK
    store.close()
