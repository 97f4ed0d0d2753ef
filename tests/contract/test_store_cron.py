"""Store contract for schedules, tick bookkeeping and the scheduler election, on every backend."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from runner import errors
from runner.models import ConcurrencyPolicy, CronEntry, Schedule
from runner.store import Store, open_store
from tests.contract.plans import T0


def entry(name: str = "nightly", *, cron: str = "0 2 * * *", suspend: bool = False) -> CronEntry:
    schedule = Schedule(cron=cron, timezone="Europe/Berlin", suspend=suspend)
    plan = {"workflow": name, "schedule": {"cron": cron}, "tasks": []}
    return CronEntry(
        name=name, plan=plan, plan_hash=f"h-{cron}-{suspend}", schedule=schedule, source="f.yaml"
    )


# ------------------------------------------------------------------ registry


def test_put_schedule_new_starts_at_now_and_reports_change(store: Store) -> None:
    assert store.put_schedule(entry(), now=T0) is True
    got = store.get_schedule("nightly")
    assert (got.last_tick, got.created_at, got.updated_at) == (T0, T0, T0)
    assert got.schedule.timezone == "Europe/Berlin"
    assert got.plan["workflow"] == "nightly"
    assert (got.missed, got.skipped, got.last_run_id, got.suspended) == (0, 0, None, False)


def test_put_schedule_unchanged_changes_nothing(store: Store) -> None:
    store.put_schedule(entry(), now=T0)
    assert store.put_schedule(entry(), now=T0 + 50) is False
    assert store.get_schedule("nightly").updated_at == T0


def test_put_schedule_changed_keeps_bookkeeping(store: Store) -> None:
    store.put_schedule(entry(), now=T0)
    store.record_tick("nightly", tick=T0 + 10, run_id="r1", missed=2)
    assert store.put_schedule(entry(cron="0 3 * * *"), now=T0 + 20) is True
    got = store.get_schedule("nightly")
    assert got.schedule.cron == "0 3 * * *"
    assert (got.last_tick, got.last_run_id, got.missed, got.updated_at) == (
        T0 + 10,
        "r1",
        2,
        T0 + 20,
    )


def test_put_schedule_keeps_cli_suspend_unless_file_suspend_changes(store: Store) -> None:
    store.put_schedule(entry(), now=T0)
    store.suspend_schedule("nightly", suspended=True, now=T0)
    store.put_schedule(entry(cron="0 4 * * *"), now=T0 + 1)
    assert store.get_schedule("nightly").suspended is True
    store.put_schedule(entry(cron="0 4 * * *", suspend=True), now=T0 + 2)
    store.put_schedule(entry(cron="0 4 * * *", suspend=False), now=T0 + 3)
    assert store.get_schedule("nightly").suspended is False


def test_schedule_policy_fields_round_trip(store: Store) -> None:
    schedule = Schedule(
        cron="@every 5m",
        concurrency_policy=ConcurrencyPolicy.REPLACE,
        starting_deadline=30.0,
        catchup="all",
    )
    store.put_schedule(dataclasses.replace(entry(), schedule=schedule), now=T0)
    assert store.get_schedule("nightly").schedule == schedule


def test_list_schedules_by_name_and_delete(store: Store) -> None:
    for name in ("b", "a", "c"):
        store.put_schedule(entry(name), now=T0)
    assert [e.name for e in store.list_schedules()] == ["a", "b", "c"]
    store.delete_schedule("b")
    assert [e.name for e in store.list_schedules()] == ["a", "c"]
    with pytest.raises(errors.ScheduleNotFound) as info:
        store.delete_schedule("b")
    assert info.value.name == "b"
    with pytest.raises(errors.ScheduleNotFound):
        store.get_schedule("b")


def test_suspend_and_resume_moves_last_tick_to_now(store: Store) -> None:
    store.put_schedule(entry(), now=T0)
    assert store.suspend_schedule("nightly", suspended=True, now=T0 + 5).suspended is True
    assert store.get_schedule("nightly").last_tick == T0
    resumed = store.suspend_schedule("nightly", suspended=False, now=T0 + 100)
    assert (resumed.suspended, resumed.last_tick) == (False, T0 + 100)
    with pytest.raises(errors.ScheduleNotFound):
        store.suspend_schedule("nope", suspended=True, now=T0)


# ------------------------------------------------------------------ ticks


def test_record_tick_is_monotone(store: Store) -> None:
    store.put_schedule(entry(), now=T0)
    assert store.record_tick("nightly", tick=T0 + 60, run_id="r1") is True
    assert store.record_tick("nightly", tick=T0 + 60, run_id="r-dup") is False
    assert store.record_tick("nightly", tick=T0 + 30, missed=5) is False
    assert store.record_tick("nightly", tick=T0 + 120, skipped=1, missed=3) is True
    got = store.get_schedule("nightly")
    assert (got.last_tick, got.last_run_id, got.missed, got.skipped) == (T0 + 120, "r1", 3, 1)
    assert store.record_tick("deleted", tick=T0 + 500) is False


def test_record_tick_concurrent_callers_apply_each_tick_once(store_url: str) -> None:
    first = open_store(store_url)
    first.put_schedule(entry(), now=T0)
    applied: list[float] = []
    lock = threading.Lock()

    def record(tick: float) -> None:
        s = open_store(store_url)
        try:
            if s.record_tick("nightly", tick=tick, missed=1):
                with lock:
                    applied.append(tick)
        finally:
            s.close()

    threads = [threading.Thread(target=record, args=(T0 + 1,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert applied == [T0 + 1]
    assert first.get_schedule("nightly").missed == 1
    first.close()


# ------------------------------------------------------------------ election


def test_campaign_one_leader_at_a_time(store: Store) -> None:
    now = time.time()
    assert store.campaign("a", now=now, ttl=30) is True
    assert store.campaign("b", now=now, ttl=30) is False
    assert store.campaign("a", now=now + 1, ttl=30) is True  # renewal
    assert store.leader(now=now + 1) == "a"


def test_resign_lets_another_candidate_lead_at_once(store: Store) -> None:
    now = time.time()
    assert store.campaign("a", now=now, ttl=30)
    store.resign("a", now=now)
    assert store.leader(now=now) is None
    assert store.campaign("b", now=now, ttl=30) is True
    store.resign("a", now=now)  # not the leader: nothing happens
    assert store.leader(now=now) == "b"


def test_campaign_leader_that_stops_renewing_loses_after_ttl(store_url: str) -> None:
    """Across store objects (processes): the leader's lease lapses, another takes over."""
    a, b = open_store(store_url), open_store(store_url)
    try:
        start = time.time()
        assert a.campaign("a", now=start, ttl=1)
        assert not b.campaign("b", now=start, ttl=1)
        deadline = time.monotonic() + 10
        while not b.campaign("b", now=time.time(), ttl=1):
            assert time.monotonic() < deadline, "no takeover"
            b.wait(0.1)
        assert time.time() - start >= 1.0
        assert a.campaign("a", now=time.time(), ttl=1) is False
        assert a.leader(now=time.time()) == "b"
    finally:
        a.close()
        b.close()
