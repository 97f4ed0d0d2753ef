"""The hook outbox (docs/HOOKS.md): deliveries recorded by the transaction that ends a run,
claimed under a lease with a token, retried and fenced — on every backend."""

from __future__ import annotations

import pytest

from runner import errors
from runner.models import CronEntry, HookSpec, HookState, Plan, RunState, Schedule
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import T0, claim_one, drain, fail, task, worker

HOOK_URL = "http://127.0.0.1:9/hook"


def hook(*on: str, when: str | None = None) -> HookSpec:
    return HookSpec(on=tuple(on), url=HOOK_URL, when=when)


def hooked() -> Plan:
    hooks = (hook("failure"), hook("success"), hook("always"), hook("cancelled"))
    return plans.plan(task("a"), hooks=hooks)


def due(store: Store, run_id: str) -> list[tuple[int, str]]:
    return [(h.index, h.state.value) for h in store.get_run(run_id).hooks]


def test_a_run_end_records_the_matching_hooks_once(store: Store) -> None:
    store.create_run(hooked(), run_id="r1", now=T0)
    assert store.get_run("r1").hooks == ()
    assert store.claim_hook("d", now=T0, lease_for=30) is None
    drain(store, worker(store), outcome=lambda _l: fail())
    assert due(store, "r1") == [(0, "due"), (2, "due")]
    store.sweep(now=T0 + 1)
    store.cancel_run("r1", now=T0 + 2)  # already ended: records nothing more
    assert due(store, "r1") == [(0, "due"), (2, "due")]
    got = [store.claim_hook("d", now=T0 + 3, lease_for=30) for _ in range(3)]
    assert [(g.run_id, g.index, g.end, g.attempt) for g in got if g] == [
        ("r1", 0, 1, 1),
        ("r1", 2, 1, 1),
    ]
    assert got[2] is None


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_run_ended_before_any_task_started_records_its_hooks(store: Store, how: str) -> None:
    p = plans.plan(
        task("a"),
        hooks=(hook("cancelled"), hook("timeout"), hook("failure"), hook("success")),
        timeout=60,
    )
    store.create_run(p, run_id="r1", now=T0)
    if how == "cancel":
        store.cancel_run("r1", now=T0 + 1)
        assert due(store, "r1") == [(0, "due")]
    else:
        store.sweep(now=T0 + 61)
        assert due(store, "r1") == [(1, "due"), (2, "due")]


def test_when_limits_a_hook_to_runs_of_one_schedule(store: Store) -> None:
    p = plans.plan(task("a"), hooks=(hook("always", when="nightly"), hook("always")))
    store.create_run(p, run_id="r1", now=T0)
    store.create_run(p, run_id="r2", now=T0, key="cron:nightly:1700000000")
    store.cancel_run("r1", now=T0)
    store.cancel_run("r2", now=T0)
    assert due(store, "r1") == [(1, "due")]
    assert due(store, "r2") == [(0, "due"), (1, "due")]


def test_a_claimed_delivery_is_fenced_and_taken_again_when_its_lease_lapses(
    store: Store,
) -> None:
    store.create_run(plans.plan(task("a"), hooks=(hook("always"),)), run_id="r1", now=T0)
    store.cancel_run("r1", now=T0)
    first = store.claim_hook("d1", now=T0, lease_for=30)
    assert first is not None
    assert first.key == "r1/0/1"
    assert store.get_run("r1").hooks[0].state is HookState.DELIVERING
    assert store.claim_hook("d2", now=T0 + 29, lease_for=30) is None  # held
    second = store.claim_hook("d2", now=T0 + 31, lease_for=30)  # the holder died
    assert second is not None
    assert (second.attempt, second.token != first.token) == (2, True)
    with pytest.raises(errors.LeaseLost):
        store.finish_hook(first, now=T0 + 32)  # stale: records nothing
    assert store.get_run("r1").hooks[0].state is HookState.DELIVERING
    assert store.finish_hook(second, now=T0 + 33) is HookState.DELIVERED
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.attempts, status.last_error) == (HookState.DELIVERED, 2, None)
    assert store.claim_hook("d3", now=T0 + 999, lease_for=30) is None
    with pytest.raises(errors.LeaseLost):
        store.finish_hook(second, now=T0 + 34)  # recorded once


def test_a_failing_delivery_retries_after_its_backoff_then_gives_up(store: Store) -> None:
    store.create_run(plans.plan(task("a"), hooks=(hook("always"),)), run_id="r1", now=T0)
    w = worker(store)
    store.finish(claim_one(store, w), fail(), now=T0)
    assert store.get_run("r1").state is RunState.FAILED
    one = store.claim_hook("d", now=T0, lease_for=30, run_id="r1")
    assert one is not None
    state = store.finish_hook(one, now=T0 + 1, error="HTTP 500", retry_at=T0 + 10)
    assert state is HookState.DUE
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.attempts, status.last_error) == (HookState.DUE, 1, "HTTP 500")
    assert store.claim_hook("d", now=T0 + 9, lease_for=30) is None  # backing off
    two = store.claim_hook("d", now=T0 + 10, lease_for=30, run_id="r1")
    assert two is not None
    assert two.attempt == 2
    assert store.finish_hook(two, now=T0 + 11, error="HTTP 502") is HookState.FAILED
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.attempts, status.last_error) == (HookState.FAILED, 2, "HTTP 502")
    assert store.get_run("r1").state is RunState.FAILED  # a hook never changes its run
    assert store.claim_hook("d", now=T0 + 99, lease_for=30) is None


def test_a_retried_run_that_ends_again_records_its_hooks_again(store: Store) -> None:
    store.create_run(plans.plan(task("a"), hooks=(hook("always"),)), run_id="r1", now=T0)
    store.cancel_run("r1", now=T0)
    d1 = store.claim_hook("d", now=T0, lease_for=30)
    assert d1 is not None
    store.finish_hook(d1, now=T0)
    store.retry_run("r1", now=T0 + 1)
    drain(store, worker(store), now=T0 + 1)
    d2 = store.claim_hook("d", now=T0 + 2, lease_for=30)
    assert d2 is not None
    assert (d2.key, d2.attempt) == ("r1/0/2", 1)


def test_claim_hook_by_run_and_gc_removes_deliveries(store: Store) -> None:
    p = plans.plan(task("a"), hooks=(hook("always"),))
    for run_id in ("r1", "r2"):
        store.create_run(p, run_id=run_id, now=T0)
        store.cancel_run(run_id, now=T0)
    got = store.claim_hook("d", now=T0, lease_for=30, run_id="r2")
    assert got is not None
    assert got.run_id == "r2"
    store.finish_hook(got, now=T0)
    assert store.gc(older_than=10, now=T0 + 100) == ["r1", "r2"]
    assert store.claim_hook("d", now=T0 + 100, lease_for=30) is None


def test_missed_ticks_record_missed_tick_hooks_of_the_latest_run(store: Store) -> None:
    schedule = Schedule(cron="0 2 * * *")
    cron = CronEntry(name="nightly", plan={}, plan_hash="h", schedule=schedule, source="f")
    store.put_schedule(cron, now=T0)
    p = plans.plan(task("a"), hooks=(hook("missed_tick"), hook("failure")))
    store.create_run(p, run_id="r1", now=T0, key="cron:nightly:1")
    assert store.record_tick("nightly", tick=T0 + 10, run_id="r1")  # none missed
    assert store.get_run("r1").hooks == ()
    assert store.record_tick("nightly", tick=T0 + 20, missed=3)
    assert due(store, "r1") == [(0, "due")]
    got = store.claim_hook("d", now=T0 + 20, lease_for=30)
    assert got is not None
    assert (got.key, got.spec.on) == ("r1/0/1", ("missed_tick",))
    assert not store.record_tick("nightly", tick=T0 + 5, missed=1)  # stale: records nothing
    assert store.claim_hook("d", now=T0 + 21, lease_for=30) is None


def test_claim_hook_by_kind(store: Store) -> None:
    command = HookSpec(on=("always",), run="true")
    store.create_run(plans.plan(task("a"), hooks=(command, hook("always"))), run_id="r1", now=T0)
    store.cancel_run("r1", now=T0)
    assert [h.kind for h in store.get_run("r1").hooks] == ["command", "webhook"]
    got = store.claim_hook("sched", now=T0, lease_for=30, kinds=("webhook",))
    assert got is not None
    assert (got.index, got.spec.url) == (1, HOOK_URL)
    assert store.claim_hook("sched", now=T0, lease_for=30, kinds=("webhook",)) is None
    got = store.claim_hook("worker", now=T0, lease_for=30)
    assert got is not None
    assert (got.index, got.spec.run) == (0, "true")
