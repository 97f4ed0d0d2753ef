"""Store contract: `gc` deletes old finished runs with all their data, and nothing else."""

from __future__ import annotations

import pytest

from runner import errors
from runner.models import Lease, Outcome, RunState
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import T0, claim_one, drain, fail, ok, worker

DAY = 86_400.0
WEEK = 7 * DAY


def _finished_run(store: Store, run_id: str, *, at: float, key: str | None = None) -> None:
    """A diamond run with deps, attempts (one retried) and logs, finished at `at`."""
    plan = plans.plan(
        plans.task("a"),
        plans.task("b", "a", retries=1, delay=0.0),
        plans.task("c", "a"),
        plans.task("d", "b", "c"),
    )
    store.create_run(plan, run_id=run_id, now=at, key=key)
    w = worker(store, now=at)
    first = True

    def outcome(lease: Lease) -> Outcome:
        nonlocal first
        store.append_log(lease, f"log of {lease.task_id}\n")
        if lease.task_id == "b" and first:
            first = False
            return fail()
        return ok(out="v")

    drain(store, w, now=at, outcome=outcome)
    store.deregister_worker(w, now=at)
    assert store.get_run(run_id).state is RunState.SUCCEEDED


def _gone(store: Store, run_id: str) -> None:
    with pytest.raises(errors.RunNotFound):
        store.get_run(run_id)
    with pytest.raises(errors.RunNotFound):
        store.get_log(run_id, "a")
    assert run_id not in {r.id for r in store.list_runs()}


def test_gc_deletes_old_finished_run_with_all_its_data(store: Store) -> None:
    _finished_run(store, "old", at=T0, key="cron:nightly:1")
    assert store.get_log("old", "b", attempt=1) == "log of b\n"
    assert store.gc(older_than=WEEK, now=T0 + WEEK + 1) == ["old"]
    _gone(store, "old")
    assert store.list_runs() == []


def test_gc_keeps_young_finished_and_old_unfinished_runs(store: Store) -> None:
    _finished_run(store, "old", at=T0)
    _finished_run(store, "young", at=T0 + 6 * DAY)
    store.create_run(plans.linear(2), run_id="waiting", now=T0 - DAY)
    now = T0 + WEEK + 1
    assert store.gc(older_than=WEEK, now=now, dry_run=True) == ["old"]
    assert store.get_run("old").state is RunState.SUCCEEDED  # dry run deleted nothing
    assert store.gc(older_than=WEEK, now=now) == ["old"]
    assert {r.id for r in store.list_runs()} == {"young", "waiting"}
    assert store.get_log("young", "b", attempt=2) == "log of b\n"
    w = worker(store, now=now)
    lease = claim_one(store, w, now=now)  # the unfinished run is still queued
    assert (lease.run_id, lease.task_id) == ("waiting", "t0")


def test_gc_keeps_cancelled_run_until_its_running_task_ends(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    w = worker(store, now=T0)
    lease = claim_one(store, w)
    store.cancel_run("r1", now=T0)
    assert store.gc(older_than=DAY, now=T0 + WEEK) == []
    store.finish(lease, ok(), now=T0)
    assert store.gc(older_than=DAY, now=T0 + WEEK) == ["r1"]
    _gone(store, "r1")


def test_gc_is_idempotent_and_returns_oldest_first(store: Store) -> None:
    _finished_run(store, "r2", at=T0 + 1)
    _finished_run(store, "r1", at=T0)
    now = T0 + WEEK + 2
    assert store.gc(older_than=WEEK, now=now) == ["r1", "r2"]
    assert store.gc(older_than=WEEK, now=now) == []
    assert store.gc(older_than=0.5, now=now) == []


def test_gc_frees_the_run_key_and_the_run_id(store: Store) -> None:
    _finished_run(store, "r1", at=T0, key="cron:nightly:1")
    with pytest.raises(errors.RunExists):
        store.create_run(plans.linear(1), run_id="r2", now=T0, key="cron:nightly:1")
    store.gc(older_than=DAY, now=T0 + WEEK)
    run = store.create_run(plans.linear(1), run_id="r2", now=T0 + WEEK, key="cron:nightly:1")
    assert run.key == "cron:nightly:1"
    store.create_run(plans.diamond(), run_id="r1", now=T0 + WEEK)
    got = store.get_run("r1")
    assert [t.id for t in got.tasks] == ["a", "b", "c", "d"]
    assert all(not t.attempts for t in got.tasks)
    assert store.get_log("r1", "a") == ""
