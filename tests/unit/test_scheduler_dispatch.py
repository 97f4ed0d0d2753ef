"""The scheduler's dispatch pass on the embedded store: the leader assigns, a standby doesn't."""

from __future__ import annotations

import random
from pathlib import Path

from runner import dispatch
from runner.cron.scheduler import Scheduler
from runner.models import WorkerInfo
from runner.store.sqlite import SqliteStore
from tests.contract import plans

T0 = plans.T0


def _store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(str(tmp_path / "state.db"))
    for name, weight in (("a", 1), ("b", 3)):
        info = WorkerInfo(id=name, name=name, weight=weight, capacity=100)
        store.register_worker(info, now=T0, ttl=600)
    return store


def test_leader_assigns_by_weight_and_workers_claim_their_share(tmp_path: Path) -> None:
    store = _store(tmp_path)
    state = dispatch.DispatchState(rng=random.Random(1))
    sched = Scheduler(
        store, candidate="s1", lease_ttl=600, dispatch_default="weighted", dispatch_state=state
    )
    assert sched.step(T0) > 0
    store.create_run(plans.fan_out(8), run_id="r1", now=T0)
    assert store.claim("a", now=T0, limit=8) == []  # reserved for the leader
    assert sched.dispatch_once(T0) == 8
    assert len(store.claim("a", now=T0, limit=8)) == 2
    assert len(store.claim("b", now=T0, limit=8)) == 6
    store.close()


def test_a_standby_scheduler_does_not_dispatch(tmp_path: Path) -> None:
    store = _store(tmp_path)
    leader = Scheduler(store, candidate="s1", lease_ttl=600, dispatch_default="round_robin")
    standby = Scheduler(store, candidate="s2", lease_ttl=600, dispatch_default="round_robin")
    leader.step(T0)
    standby.step(T0)
    assert (leader.leading, standby.leading) == (True, False)
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    assert store.claim("a", now=T0) == []
    assert leader.dispatch_once(T0) == 2
    assert [len(store.claim(w, now=T0, limit=5)) for w in ("a", "b")] == [1, 1]
    store.close()
