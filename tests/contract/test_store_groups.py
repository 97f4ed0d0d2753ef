"""Store contract: concurrency groups (`spec.concurrency`): at most one run of a group runs;
a new run queues behind the group's unfinished runs or cancels them (cancelInProgress)."""

from __future__ import annotations

from runner.models import Concurrency, Plan, RunState
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import SHORT_TTL, T0, expire_worker, ok, task, worker


def _grouped(group: str, *, cancel: bool = False, workflow: str = "deploy") -> Plan:
    cc = Concurrency(group=group, cancel_in_progress=cancel)
    return plans.plan(task("a"), task("b", "a"), workflow=workflow, concurrency=cc)


def _claimed(store: Store, w: str, now: float = T0) -> list[tuple[str, str]]:
    return sorted((x.run_id, x.task_id) for x in store.claim(w, now=now, limit=10))


def test_a_run_queues_behind_the_unfinished_run_of_its_group(store: Store) -> None:
    store.create_run(_grouped("deploy-prod"), run_id="r1", now=T0)
    store.create_run(_grouped("deploy-prod"), run_id="r2", now=T0 + 1)
    store.create_run(_grouped("deploy-dev"), run_id="r3", now=T0 + 2)
    w = worker(store)
    leases = store.claim(w, now=T0, limit=10)
    assert sorted((x.run_id, x.task_id) for x in leases) == [("r1", "a"), ("r3", "a")]
    r2 = store.get_run("r2", now=T0)
    assert (r2.state, r2.group, r2.waiting_reason) == (
        RunState.PENDING,
        "deploy-prod",
        "queued: group deploy-prod",
    )
    listed = {r.id: r.waiting_reason for r in store.list_runs()}
    assert listed == {"r1": None, "r2": "queued: group deploy-prod", "r3": None}
    first = next(x for x in leases if x.run_id == "r1")
    (b,) = store.finish(first, ok(), now=T0, claim=1)  # the run goes on, r2 still waits
    assert (b.run_id, b.task_id) == ("r1", "b")
    assert _claimed(store, w) == []
    store.finish(b, ok(), now=T0)
    assert store.get_run("r1").state is RunState.SUCCEEDED
    assert _claimed(store, w) == [("r2", "a")]
    assert store.get_run("r2", now=T0).waiting_reason is None


def test_cancel_in_progress_cancels_the_group_and_runs_the_new_one(store: Store) -> None:
    store.create_run(_grouped("g"), run_id="r1", now=T0)
    store.create_run(_grouped("g"), run_id="r2", now=T0 + 1)
    w = worker(store)
    assert _claimed(store, w) == [("r1", "a")]
    store.create_run(_grouped("g", cancel=True), run_id="r3", now=T0 + 2)
    for old in ("r1", "r2"):
        run = store.get_run(old)
        assert run.state is RunState.CANCELLED
        assert run.reason == "cancelled by run r3 (concurrency group g, cancelInProgress)"
    assert _claimed(store, w) == [("r3", "a")]


def test_a_cancelled_or_deleted_run_releases_its_group(store: Store) -> None:
    store.create_run(_grouped("g"), run_id="r1", now=T0)
    store.create_run(_grouped("g"), run_id="r2", now=T0 + 1)
    store.create_run(_grouped("g"), run_id="r3", now=T0 + 2)
    w = worker(store)
    assert _claimed(store, w) == [("r1", "a")]
    store.cancel_run("r2", now=T0)  # a queued run leaves the line
    assert _claimed(store, w) == []
    store.cancel_run("r1", now=T0)
    assert _claimed(store, w) == [("r3", "a")]


def test_a_vanished_worker_does_not_keep_the_group(store: Store) -> None:
    """The run, not its worker, holds the group: the lease rules re-queue the lost attempt
    and another worker finishes the run, which then releases the group."""
    store.create_run(_grouped("g"), run_id="r1", now=T0)
    store.create_run(_grouped("g"), run_id="r2", now=T0 + 1)
    dying = worker(store, "dying", ttl=SHORT_TTL)
    assert _claimed(store, dying) == [("r1", "a")]
    later = expire_worker(store, dying, now=T0, ttl=SHORT_TTL)
    store.sweep(now=later)
    other = worker(store, "other", now=later)
    assert plans.drain(store, other, now=later) == ["a", "b", "a", "b"]
    assert [store.get_run(r).state for r in ("r1", "r2")] == [RunState.SUCCEEDED] * 2


def test_a_retried_run_goes_to_the_back_of_its_group(store: Store) -> None:
    store.create_run(_grouped("g"), run_id="r1", now=T0)
    w = worker(store)
    store.cancel_run("r1", now=T0)
    store.create_run(_grouped("g"), run_id="r2", now=T0 + 1)
    assert _claimed(store, w) == [("r2", "a")]
    store.retry_run("r1", now=T0 + 2)
    assert store.get_run("r1", now=T0).waiting_reason == "queued: group g"
    assert _claimed(store, w) == []
