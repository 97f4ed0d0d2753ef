"""Store contract: the cluster (assignments, reservation, locks, drain, waiting reasons)."""

from __future__ import annotations

import dataclasses
import threading

from runner.models import Semaphore, TaskSpec, WorkerInfo
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import (
    SHORT_TTL,
    T0,
    TTL,
    claim_one,
    expire_worker,
    ok,
    task,
    worker,
)


def _mutex(spec: TaskSpec, name: str) -> TaskSpec:
    return dataclasses.replace(spec, mutex=name)


def _sem(spec: TaskSpec, name: str, limit: int) -> TaskSpec:
    return dataclasses.replace(spec, semaphore=Semaphore(name=name, limit=limit))


def _labelled(store: Store, name: str, labels: dict[str, str], *, ttl: float = TTL) -> str:
    worker_id = f"{name}-{plans.new_run_id()}"
    info = WorkerInfo(id=worker_id, name=name, labels=labels, capacity=4)
    store.register_worker(info, now=T0, ttl=ttl)
    return worker_id


# ------------------------------------------------------------------ assignments


def test_assigned_task_is_claimed_only_by_its_worker_and_first(store: Store) -> None:
    store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    a, b = worker(store, "a"), worker(store, "b")
    assert store.assign([(("r1", "t2"), b)], now=T0) == [("r1", "t2")]
    assert sorted(x.task_id for x in store.claim(a, now=T0, limit=5)) == ["t0", "t1"]
    store.create_run(plans.fan_out(1), run_id="r2", now=T0)
    assert [x.task_id for x in store.claim(b, now=T0, limit=1)] == ["t2"]  # before r2/t0


def test_assign_skips_claimed_tasks_and_draining_or_unknown_workers(store: Store) -> None:
    store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    a, b = worker(store, "a"), worker(store, "b")
    first = claim_one(store, a)
    assert store.assign([((first.run_id, first.task_id), b)], now=T0) == []
    assert store.assign([(("r1", "t1"), "nobody")], now=T0) == []
    assert store.drain_worker("b", now=T0) == [b]
    assert store.assign([(("r1", "t1"), b)], now=T0) == []
    assert store.assign([(("r1", "t1"), a)], now=T0) == [("r1", "t1")]
    assert store.assign([(("r1", "t1"), a)], now=T0) == []  # already assigned


def test_dispatch_view_lists_non_pull_tasks_with_worker_load(store: Store) -> None:
    store.create_run(plans.fan_out(2, workflow="pulled"), run_id="r1", now=T0)
    store.create_run(plans.fan_out(3, workflow="rr", dispatch="round_robin"), run_id="r2", now=T0)
    a = worker(store, "a")
    running = claim_one(store, a)  # r1 or r2 by FIFO: r1/t0
    assert running.run_id == "r1"
    view = store.dispatch_view(now=T0)
    assert [(t.run_id, t.task_id, t.dispatch) for t in view.tasks] == [
        ("r2", "t0", "round_robin"),
        ("r2", "t1", "round_robin"),
        ("r2", "t2", "round_robin"),
    ]
    store.assign([(("r2", "t0"), a)], now=T0)
    view = store.dispatch_view(now=T0, default="least_load")
    assert [t.key for t in view.tasks] == [("r1", "t1"), ("r2", "t1"), ("r2", "t2")]
    (w,) = view.workers
    assert (w.id, w.running, w.assigned) == (a, 1, 1)


def test_reserved_tasks_wait_for_the_leader_and_are_pulled_without_one(store: Store) -> None:
    store.create_run(plans.fan_out(2, dispatch="weighted"), run_id="r1", now=T0)
    store.create_run(plans.fan_out(1, workflow="plain"), run_id="r2", now=T0)
    w = worker(store)
    assert store.campaign("sched-1", now=T0, ttl=TTL)
    store.set_dispatch("sched-1", "pull", now=T0)
    assert [x.run_id for x in store.claim(w, now=T0, limit=5)] == ["r2"]  # r1 is reserved
    store.resign("sched-1", now=T0)
    assert [x.run_id for x in store.claim(w, now=T0, limit=5)] == ["r1", "r1"]


def test_a_non_pull_default_reserves_every_run(store: Store) -> None:
    store.create_run(plans.fan_out(1), run_id="r1", now=T0)
    store.create_run(plans.fan_out(1, workflow="own", dispatch="pull"), run_id="r2", now=T0)
    w = worker(store)
    assert store.campaign("sched-1", now=T0, ttl=TTL)
    store.set_dispatch("sched-1", "round_robin", now=T0)
    assert [x.run_id for x in store.claim(w, now=T0, limit=5)] == ["r2"]
    assert store.assign([(("r1", "t0"), w)], now=T0) == [("r1", "t0")]
    assert [x.run_id for x in store.claim(w, now=T0, limit=5)] == ["r1"]


def test_assignments_of_a_dead_worker_return_to_the_queue(store: Store) -> None:
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    a = worker(store, "a")
    dying = worker(store, "dying", ttl=SHORT_TTL)
    store.assign([(("r1", "t0"), dying), (("r1", "t1"), dying)], now=T0)
    assert store.claim(a, now=T0, limit=5) == []
    later = expire_worker(store, dying, now=T0, ttl=SHORT_TTL)
    store.sweep(now=later)
    store.heartbeat(a, now=later, ttl=TTL, running=0)
    assert sorted(x.task_id for x in store.claim(a, now=later, limit=5)) == ["t0", "t1"]


def test_deregister_and_drain_return_assignments(store: Store) -> None:
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    a, b, c = worker(store, "a"), worker(store, "b"), worker(store, "c")
    store.assign([(("r1", "t0"), b), (("r1", "t1"), c)], now=T0)
    store.deregister_worker(b, now=T0)
    assert store.drain_worker(c, now=T0) == [c]
    assert sorted(x.task_id for x in store.claim(a, now=T0, limit=5)) == ["t0", "t1"]


# ------------------------------------------------------------------ drain


def test_drain_worker_flags_heartbeat_and_stops_claims(store: Store) -> None:
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    a, b = worker(store, "a"), worker(store, "b")
    assert store.drain_worker("nobody", now=T0) == []
    assert store.drain_worker("a", now=T0) == [a]
    assert store.heartbeat(a, now=T0, ttl=TTL, running=0).drain
    assert not store.heartbeat(b, now=T0, ttl=TTL, running=0).drain
    assert store.claim(a, now=T0) == []
    assert [w.draining for w in store.list_workers(now=T0)] == [True, False]
    assert len(store.claim(b, now=T0, limit=5)) == 2


# ------------------------------------------------------------------ selectors


def test_waiting_reason_names_a_selector_no_live_worker_matches(store: Store) -> None:
    store.create_run(plans.plan(task("t", selector={"gpu": "true"})), run_id="r1", now=T0)
    _labelled(store, "cpu", {"gpu": "false"})
    (rec,) = store.get_run("r1", now=T0).tasks
    assert rec.waiting_reason == "waiting: no live worker matches gpu=true"
    gpu = _labelled(store, "gpu", {"gpu": "true"})
    (rec,) = store.get_run("r1", now=T0).tasks
    assert rec.waiting_reason == "queued"
    store.drain_worker(gpu, now=T0)
    (rec,) = store.get_run("r1", now=T0).tasks
    assert rec.waiting_reason == "waiting: no live worker matches gpu=true"


# ------------------------------------------------------------------ locks


def test_mutex_is_exclusive_across_runs_and_released_by_finish(store: Store) -> None:
    for run_id in ("r1", "r2"):
        p = plans.plan(_mutex(task("a"), "db"), _mutex(task("b"), "db"), task("free"))
        store.create_run(p, run_id=run_id, now=T0)
    w = worker(store)
    first = store.claim(w, now=T0, limit=10)
    assert sorted((x.run_id, x.task_id) for x in first) == [
        ("r1", "a"),
        ("r1", "free"),
        ("r2", "free"),
    ]
    assert store.claim(w, now=T0, limit=10) == []
    (lock,) = store.list_locks(now=T0)
    assert (lock.name, lock.limit, len(lock.holders), len(lock.waiters)) == ("mutex:db", 1, 1, 3)
    held = next(x for x in first if x.task_id == "a")
    assert store.get_run("r1", now=T0).tasks[1].waiting_reason == "waiting: mutex db is held"
    store.finish(held, ok(), now=T0)
    (nxt,) = store.claim(w, now=T0, limit=10)  # one of the three waiters
    assert (nxt.run_id, nxt.task_id) in {("r1", "b"), ("r2", "a"), ("r2", "b")}


def test_semaphore_limit_holds(store: Store) -> None:
    p = plans.plan(*(_sem(task(f"t{i}"), "pool", 2) for i in range(5)))
    store.create_run(p, run_id="r1", now=T0)
    w = worker(store)
    got = store.claim(w, now=T0, limit=10)
    assert len(got) == 2
    assert store.claim(w, now=T0, limit=10) == []
    store.finish(got[0], ok(), now=T0)
    assert len(store.claim(w, now=T0, limit=10)) == 1
    (lock,) = store.list_locks(now=T0)
    assert (lock.name, lock.limit, len(lock.holders)) == ("semaphore:pool", 2, 2)


def test_dead_holder_releases_its_lock(store: Store) -> None:
    store.create_run(
        plans.plan(_mutex(task("a"), "db"), _mutex(task("b"), "db")), run_id="r1", now=T0
    )
    dying = worker(store, "dying", ttl=SHORT_TTL)
    held = claim_one(store, dying)
    other = worker(store, "other")
    assert store.claim(other, now=T0, limit=5) == []
    later = expire_worker(store, dying, now=T0, ttl=SHORT_TTL)
    store.sweep(now=later)
    store.heartbeat(other, now=later, ttl=TTL, running=0)
    again = store.claim(other, now=later, limit=5)
    assert len(again) == 1  # the mutex again admits exactly one of a (re-queued) and b
    assert {held.task_id, again[0].task_id} <= {"a", "b"}
    assert [len(x.holders) for x in store.list_locks(now=later)] == [1]


def test_contended_mutex_across_runs_never_overlaps(store: Store, stores: list[Store]) -> None:
    for i in range(3):
        p = plans.plan(*(_mutex(task(f"t{j}"), "db") for j in range(4)))
        store.create_run(p, run_id=f"r{i}", now=T0)
    holding: list[str] = []
    overlaps: list[list[str]] = []
    done: list[str] = []
    guard = threading.Lock()

    def serve(s: Store) -> None:
        w = worker(s)
        while len(done) < 12:
            for lease in s.claim(w, now=T0, limit=3):
                with guard:
                    holding.append(lease.task_id)
                    if len(holding) > 1:
                        overlaps.append(list(holding))
                with guard:
                    holding.remove(lease.task_id)
                    done.append(lease.task_id)
                s.finish(lease, ok(), now=T0)
            s.wait(0.05)

    threads = [threading.Thread(target=serve, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(done) == 12
    assert overlaps == []
