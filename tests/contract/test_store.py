"""Store contract: runs, the priority queue, leases, fencing and logs. Protocol-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import errors
from runner.models import AttemptState, Kind, Lease, Outcome, Reason, RunState, TaskSpec, TaskState
from runner.store import Store, open_store
from runner.store.base import MAX_LOSSES
from tests.contract import plans
from tests.contract.conftest import WITH_WIDE, url_for
from tests.contract.plans import SHORT_TTL, T0, claim_one, drain, fail, ok, states, worker


@pytest.fixture(params=WITH_WIDE)
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Also "etcd-wide": dependencies counted as a wide task's (see conftest)."""
    return url_for(request, tmp_path, monkeypatch)


# ------------------------------------------------------------------ runs


def test_create_run_stores_tasks_in_plan_order(store: Store) -> None:
    run = store.create_run(plans.diamond(params={"x": 1}), run_id="r1", now=T0)
    assert (run.id, run.state, run.tasks_total, run.tasks_done) == ("r1", RunState.PENDING, 4, 0)
    got = store.get_run("r1")
    assert got.params == {"x": 1}
    assert got.created_at == T0
    assert [t.id for t in got.tasks] == ["a", "b", "c", "d"]
    by_id = {t.id: t for t in got.tasks}
    assert by_id["a"].state is TaskState.READY
    assert by_id["a"].waiting_reason == "queued"
    assert by_id["d"].state is TaskState.PENDING
    assert by_id["d"].waiting_reason == "waiting for 2 dependencies"
    assert {t.id: t.depends for t in got.tasks} == {
        "a": (),
        "b": ("a",),
        "c": ("a",),
        "d": ("b", "c"),
    }


def test_create_run_duplicate_id_raises_run_exists(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    with pytest.raises(errors.RunExists) as info:
        store.create_run(plans.linear(3), run_id="r1", now=T0 + 1)
    assert info.value.run_id == "r1"
    assert store.get_run("r1").tasks_total == 1


def test_create_run_duplicate_key_raises_run_exists_naming_first_run(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0, key="cron:nightly:1")
    with pytest.raises(errors.RunExists) as info:
        store.create_run(plans.linear(1), run_id="r2", now=T0, key="cron:nightly:1")
    assert info.value.run_id == "r1"
    with pytest.raises(errors.RunNotFound):
        store.get_run("r2")
    assert store.get_run("r1").key == "cron:nightly:1"


def test_get_run_unknown_id_raises_run_not_found(store: Store) -> None:
    with pytest.raises(errors.RunNotFound) as info:
        store.get_run("nope")
    assert info.value.run_id == "nope"


def test_get_log_unknown_run_or_task_raises(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    with pytest.raises(errors.RunNotFound):
        store.get_log("nope", "t0")
    with pytest.raises(errors.TaskNotFound):
        store.get_log("r1", "nope")
    assert store.get_log("r1", "t0") == ""


def test_list_runs_newest_first_by_workflow_and_limit(store: Store) -> None:
    store.create_run(plans.linear(1, workflow="a"), run_id="r1", now=T0)
    store.create_run(plans.linear(1, workflow="b"), run_id="r2", now=T0 + 1)
    store.create_run(plans.linear(1, workflow="a"), run_id="r3", now=T0 + 2)
    assert [r.id for r in store.list_runs()] == ["r3", "r2", "r1"]
    assert [r.id for r in store.list_runs(workflow="a")] == ["r3", "r1"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r3", "r2"]
    assert all(r.tasks == () for r in store.list_runs())


def test_run_state_survives_close_and_reopen(store_url: str) -> None:
    first = open_store(store_url)
    w = worker(first)
    first.create_run(plans.linear(2), run_id="r1", now=T0)
    lease = claim_one(first, w)
    first.finish(lease, ok(k="v"), now=T0 + 1)
    first.close()
    first.close()  # idempotent
    again = open_store(store_url)
    try:
        run = again.get_run("r1")
        assert [(t.id, t.state) for t in run.tasks] == [
            ("t0", TaskState.SUCCEEDED),
            ("t1", TaskState.READY),
        ]
        assert run.tasks[0].outputs == {"k": "v"}
        assert run.state is RunState.RUNNING
    finally:
        again.close()


# ------------------------------------------------------------------ the queue


def test_claim_order_is_priority_then_fifo(store: Store) -> None:
    prios = [(i * 7) % 5 - 2 for i in range(50)]
    store.create_run(plans.fan_out(50, priorities=prios), run_id="r1", now=T0)
    order = drain(store, worker(store))
    claimed_prios = [prios[int(tid[1:])] for tid in order]
    assert claimed_prios == sorted(claimed_prios, reverse=True)
    for p in set(prios):  # FIFO (plan order here) within one priority
        same = [int(tid[1:]) for tid in order if prios[int(tid[1:])] == p]
        assert same == sorted(same)


def test_claim_priority_spans_runs_and_fifo_across_runs(store: Store) -> None:
    store.create_run(plans.plan(plans.task("low")), run_id="r1", now=T0)
    store.create_run(plans.plan(plans.task("first", priority=5)), run_id="r2", now=T0)
    store.create_run(plans.plan(plans.task("second", priority=5)), run_id="r3", now=T0)
    assert drain(store, worker(store)) == ["first", "second", "low"]


def test_claim_limit_takes_several_tasks_at_once(store: Store) -> None:
    store.create_run(plans.fan_out(5), run_id="r1", now=T0)
    w = worker(store)
    leases = store.claim(w, now=T0, limit=3)
    assert [lease.task_id for lease in leases] == ["t0", "t1", "t2"]
    assert len({lease.token for lease in leases}) == 3
    assert len(store.claim(w, now=T0, limit=10)) == 2
    assert store.claim(w, now=T0) == []


def test_claim_marks_task_and_run_running(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    w = worker(store)
    lease = claim_one(store, w, now=T0 + 5)
    assert (lease.run_id, lease.task_id, lease.attempt, lease.worker_id) == ("r1", "t0", 1, w)
    assert lease.spec.id == "t0"
    run = store.get_run("r1")
    assert (run.state, run.started_at) == (RunState.RUNNING, T0 + 5)
    attempt = run.tasks[0].attempts[0]
    assert (attempt.state, attempt.worker, attempt.token) == (AttemptState.RUNNING, w, lease.token)
    assert run.tasks[0].state is TaskState.RUNNING


def test_claim_skips_tasks_whose_selector_does_not_match(store: Store) -> None:
    gpu = plans.task("gpu", selector={"gpu": "yes"})
    store.create_run(plans.plan(gpu, plans.task("any")), run_id="r1", now=T0)
    w = worker(store)
    assert [x.task_id for x in store.claim(w, now=T0, limit=5, labels={"os": "x"})] == ["any"]
    assert [x.task_id for x in store.claim(w, now=T0, labels={"gpu": "yes"})] == ["gpu"]


def test_claim_by_expired_worker_raises_lease_lost(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    w = worker(store, ttl=SHORT_TTL)
    later = plans.expire_worker(store, w, now=T0, ttl=SHORT_TTL)
    with pytest.raises(errors.LeaseLost):
        store.claim(w, now=later)
    assert states(store, "r1") == {"t0": "ready"}


def test_lease_context_carries_params_and_referenced_outputs(store: Store) -> None:
    use = TaskSpec(
        id="use",
        name="use",
        kind=Kind.RUN,
        run="echo ${{ tasks.make.outputs.path }}",
        depends=("make", "other"),
    )
    p = plans.plan(plans.task("make"), plans.task("other"), use, params={"env": "prod"})
    store.create_run(p, run_id="r1", now=T0, scheduled_time=T0 - 60)
    w = worker(store)
    for lease in store.claim(w, now=T0, limit=2):
        store.finish(lease, ok(path=f"/out/{lease.task_id}"), now=T0)
    lease = claim_one(store, w)
    assert lease.task_id == "use"
    assert lease.context.run_id == "r1"
    assert lease.context.params == {"env": "prod"}
    assert lease.context.scheduled_time == T0 - 60
    assert lease.context.outputs == {"make": {"path": "/out/make"}}


def test_parameter_values_survive_exactly(store: Store) -> None:
    # an integer beyond 64 bits (YAML allows it), a float and text with every JSON escape
    params = {"big": 2**70 + 1, "neg": -(2**64), "f": 0.1, "s": 'a"\\\n\u00e9\U0001f600'}
    store.create_run(plans.fan_out(1, params=params), run_id="r1", now=T0)
    assert store.get_run("r1").params == params
    lease = claim_one(store, worker(store))
    assert lease.context.params == params


def test_finish_records_when_the_attempt_started_running(store: Store) -> None:
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    w = worker(store)
    held, claimed = store.claim(w, now=T0, limit=2)  # both at T0: one waits for a slot
    store.finish(held, Outcome(succeeded=True, exit_code=0, started_at=T0 + 7), now=T0 + 9)
    store.finish(claimed, ok(), now=T0 + 9)
    starts = {t.id: t.attempts[0].started_at for t in store.get_run("r1").tasks}
    assert starts == {held.task_id: T0 + 7, claimed.task_id: T0}


# ------------------------------------------------------------------ leases and fencing


def test_sweep_returns_tasks_of_expired_worker_as_lost(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    w = worker(store, ttl=SHORT_TTL)
    lease = claim_one(store, w)
    later = plans.expire_worker(store, w, now=T0, ttl=SHORT_TTL)
    assert store.sweep(now=later) == [("r1", "t0")]
    assert store.sweep(now=later) == []  # idempotent
    task = store.get_run("r1").tasks[0]
    assert (task.state, task.losses) == (TaskState.READY, 1)
    assert (task.attempts[0].state, task.attempts[0].reason) == (AttemptState.LOST, Reason.LOST)
    again = claim_one(store, worker(store, now=later), now=later)
    assert (again.task_id, again.attempt) == ("t0", 2)
    assert again.token != lease.token


def test_stale_token_is_rejected_and_records_nothing(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    stale_worker = worker(store, ttl=SHORT_TTL)
    stale = claim_one(store, stale_worker)
    store.append_log(stale, "before\n")
    later = plans.expire_worker(store, stale_worker, now=T0, ttl=SHORT_TTL)
    store.sweep(now=later)
    fresh = claim_one(store, worker(store, now=later), now=later)
    with pytest.raises(errors.LeaseLost):
        store.finish(stale, ok(k="stale"), now=later)
    with pytest.raises(errors.LeaseLost):
        store.append_log(stale, "after\n")
    task = store.get_run("r1").tasks[0]
    assert task.state is TaskState.RUNNING
    assert task.outputs == {}
    assert [a.state for a in task.attempts] == [AttemptState.LOST, AttemptState.RUNNING]
    assert store.get_log("r1", "t0", attempt=1) == "before\n"
    assert states(store, "r1")["t1"] == "pending"
    store.finish(fresh, ok(), now=later)
    assert states(store, "r1") == {"t0": "succeeded", "t1": "ready"}


def test_finish_twice_with_one_token_raises_lease_lost(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    lease = claim_one(store, worker(store))
    store.finish(lease, ok(), now=T0)
    with pytest.raises(errors.LeaseLost):
        store.finish(lease, fail(), now=T0)
    assert states(store, "r1") == {"t0": "succeeded"}
    assert len(store.get_run("r1").tasks[0].attempts) == 1


def test_finish_with_claim_takes_the_successor_it_made_ready(store: Store) -> None:
    store.create_run(plans.linear(3), run_id="r1", now=T0)
    w = worker(store)
    first = claim_one(store, w)
    (second,) = store.finish(first, ok(), now=T0, claim=1)
    assert (second.task_id, second.attempt, second.worker_id) == ("t1", 1, w)
    assert second.token != first.token
    assert states(store, "r1") == {"t0": "succeeded", "t1": "running", "t2": "pending"}
    assert store.finish(second, ok(), now=T0) == []  # no claim asked: t2 stays queued
    assert states(store, "r1")["t2"] == "ready"
    (third,) = store.claim(w, now=T0)
    assert store.finish(third, ok(), now=T0, claim=5) == []  # nothing left to claim
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_finish_with_claim_follows_priority_over_every_run(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    store.create_run(plans.plan(plans.task("urgent", priority=9)), run_id="r2", now=T0)
    w = worker(store)
    (lease,) = store.claim(w, now=T0)
    assert lease.task_id == "urgent"
    store.finish(lease, ok(), now=T0)
    lease = claim_one(store, w)
    store.create_run(plans.plan(plans.task("high", priority=5)), run_id="r3", now=T0)
    leases = store.finish(lease, ok(), now=T0, claim=2)
    assert [(x.run_id, x.task_id) for x in leases] == [("r3", "high"), ("r1", "t1")]


def test_finish_with_claim_of_a_stale_lease_claims_nothing(store: Store) -> None:
    store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    w = worker(store)
    lease = claim_one(store, w)
    store.finish(lease, ok(), now=T0)
    with pytest.raises(errors.LeaseLost):
        store.finish(lease, ok(), now=T0, claim=2)
    assert states(store, "r1") == {"t0": "succeeded", "t1": "ready", "t2": "ready"}


def test_finish_with_claim_gives_a_draining_worker_nothing(store: Store) -> None:
    store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    w = worker(store, "drainme")
    lease = claim_one(store, w)
    store.drain_worker("drainme", now=T0)
    assert store.finish(lease, ok(), now=T0, claim=2) == []
    assert states(store, "r1") == {"t0": "succeeded", "t1": "ready", "t2": "ready"}


def test_finish_many_records_each_attempt_and_skips_only_the_stale_one(store: Store) -> None:
    store.create_run(plans.fan_out(5), run_id="r1", now=T0)
    w = worker(store)
    root = claim_one(store, w)
    assert store.finish_many([(root, ok())], now=T0) == ([], [])
    leases = store.claim(w, now=T0, limit=4)
    store.finish(leases[0], ok(), now=T0)  # its token is stale from here on
    lost, claimed = store.finish_many(
        [(leases[0], fail()), (leases[1], ok(n="1")), (leases[2], fail()), (leases[3], ok())],
        now=T0 + 1,
    )
    assert (lost, claimed) == ([leases[0].key], [])
    run = store.get_run("r1")
    by_id = {t.id: t for t in run.tasks}
    assert [by_id[x.task_id].state for x in leases] == [
        TaskState.SUCCEEDED,  # the first finish stands
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SUCCEEDED,
    ]
    assert by_id[leases[1].task_id].outputs == {"n": "1"}
    assert [len(by_id[x.task_id].attempts) for x in leases] == [1, 1, 1, 1]
    assert run.state is RunState.FAILED
    assert run.tasks_done == 5


def test_finish_many_joins_once_and_claims_after(store: Store) -> None:
    # a, b -> c: both dependencies finish in one call; c is queued once and claimed with it
    store.create_run(
        plans.plan(plans.task("a"), plans.task("b"), plans.task("c", "a", "b")),
        run_id="r1",
        now=T0,
    )
    w = worker(store)
    a, b = store.claim(w, now=T0, limit=2)
    lost, claimed = store.finish_many([(a, ok()), (b, ok())], now=T0, claim=3)
    assert lost == []
    assert [(x.task_id, x.attempt) for x in claimed] == [("c", 1)]
    assert store.claim(w, now=T0, limit=3) == []
    store.finish_many([(claimed[0], ok())], now=T0)
    run = store.get_run("r1")
    assert run.state is RunState.SUCCEEDED
    assert [len(t.attempts) for t in run.tasks] == [1, 1, 1]


def test_finish_many_successes_fence_each_and_free_what_they_gate(store: Store) -> None:
    # a..d run; e needs b and c, f needs d. Four successes in one call, the first stale.
    store.create_run(
        plans.plan(
            *(plans.task(x) for x in "abcd"), plans.task("e", "b", "c"), plans.task("f", "d")
        ),
        run_id="r1",
        now=T0,
    )
    w = worker(store)
    leases = store.claim(w, now=T0, limit=4)
    assert [x.task_id for x in leases] == ["a", "b", "c", "d"]
    store.finish(leases[0], ok(first="yes"), now=T0)  # a's token is stale from here on
    lost, claimed = store.finish_many(
        [(leases[0], ok(first="no")), (leases[1], ok(n="1")), (leases[2], ok()), (leases[3], ok())],
        now=T0 + 1,
    )
    assert (lost, claimed) == ([leases[0].key], [])
    run = store.get_run("r1")
    by_id = {t.id: t for t in run.tasks}
    assert {t.id: t.state.value for t in run.tasks} == {
        **{x: "succeeded" for x in "abcd"},
        "e": "ready",
        "f": "ready",
    }
    assert by_id["a"].outputs == {"first": "yes"}  # the first finish stands
    assert by_id["b"].outputs == {"n": "1"}
    assert [len(by_id[x].attempts) for x in "abcd"] == [1, 1, 1, 1]
    assert {by_id[x].attempts[0].state for x in "bcd"} == {AttemptState.SUCCEEDED}
    assert (run.state, run.tasks_done) == (RunState.RUNNING, 4)
    rest = store.claim(w, now=T0 + 2, limit=3)
    assert sorted(x.task_id for x in rest) == ["e", "f"]
    assert store.finish_many([(x, ok()) for x in rest], now=T0 + 3) == ([], [])
    run = store.get_run("r1")
    assert (run.state, run.tasks_done) == (RunState.SUCCEEDED, 6)


def test_finish_many_records_a_batch_larger_than_any_one_statement_takes(store: Store) -> None:
    n = 205  # more than the SQLite store records in one statement (finish.PLAIN_MAX)
    store.create_run(plans.fan_out(n), run_id="r1", now=T0)
    w = worker(store)
    leases: list[Lease] = []
    while len(leases) < n and (more := store.claim(w, now=T0, limit=n - len(leases))):
        leases += more  # a store may cap one call's claims
    assert len(leases) == n
    assert store.finish_many([(x, ok(i=str(i))) for i, x in enumerate(leases)], now=T0) == (
        [],
        [],
    )
    run = store.get_run("r1")
    assert (run.state, run.tasks_done) == (RunState.SUCCEEDED, n)
    assert {t.id: t.outputs for t in run.tasks} == {
        x.task_id: {"i": str(i)} for i, x in enumerate(leases)
    }


def test_finish_many_successes_of_a_cancelled_run_end_as_a_lone_finish_does(
    store: Store,
) -> None:
    store.create_run(plans.fan_out(4), run_id="r1", now=T0)
    w = worker(store)
    leases = store.claim(w, now=T0, limit=3)
    store.cancel_run("r1", now=T0 + 1)
    store.finish(leases[0], ok(), now=T0 + 2)
    assert store.finish_many([(x, ok()) for x in leases[1:]], now=T0 + 2) == ([], [])
    run = store.get_run("r1")
    by_id = {t.id: t for t in run.tasks}
    alone = by_id[leases[0].task_id]
    for lease in leases[1:]:
        task = by_id[lease.task_id]
        assert (task.state, task.attempts[0].state) == (alone.state, alone.attempts[0].state)
    assert (run.state, run.tasks_done) == (RunState.CANCELLED, 4)


def test_finish_many_successes_of_a_deregistered_worker_record_nothing(store: Store) -> None:
    store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    w = worker(store)
    leases = store.claim(w, now=T0, limit=2)
    store.deregister_worker(w, now=T0 + 1)
    lost, claimed = store.finish_many([(x, ok()) for x in leases], now=T0 + 2)
    assert (sorted(lost), claimed) == (sorted(x.key for x in leases), [])
    assert states(store, "r1") == {"t0": "ready", "t1": "ready"}
    assert store.get_run("r1").tasks_done == 0


def test_task_fails_on_its_last_loss_and_failure_propagates(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    now = T0
    for loss in range(1, MAX_LOSSES + 1):
        w = worker(store, now=now, ttl=SHORT_TTL)
        claim_one(store, w, now=now)
        now = plans.expire_worker(store, w, now=now, ttl=SHORT_TTL)
        assert store.sweep(now=now) == [("r1", "t0")]
        assert store.get_run("r1").tasks[0].losses == loss
    run = store.get_run("r1")
    assert [t.state for t in run.tasks] == [TaskState.FAILED, TaskState.SKIPPED]
    assert run.state is RunState.FAILED


def test_deregister_worker_requeues_without_counting_a_loss(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    w = worker(store)
    claim_one(store, w)
    store.deregister_worker(w, now=T0 + 1)
    task = store.get_run("r1").tasks[0]
    assert (task.state, task.losses) == (TaskState.READY, 0)
    assert task.attempts[0].state is AttemptState.LOST
    assert w not in {x.id for x in store.list_workers(now=T0 + 1)}


def test_heartbeat_renews_lease_and_fails_after_expiry(store: Store) -> None:
    w = worker(store, ttl=SHORT_TTL)
    assert store.heartbeat(w, now=T0 + 1, ttl=SHORT_TTL, running=0).abort == frozenset()
    assert [x.id for x in store.list_workers(now=T0 + 1)] == [w]
    later = plans.expire_worker(store, w, now=T0 + 1, ttl=SHORT_TTL)
    with pytest.raises(errors.LeaseLost):
        store.heartbeat(w, now=later, ttl=SHORT_TTL, running=0)


# ------------------------------------------------------------------ logs


def test_append_log_keeps_the_last_log_limit_bytes(store_url: str) -> None:
    small = open_store(store_url, log_limit=10)
    try:
        small.create_run(plans.linear(1), run_id="r1", now=T0)
        lease = claim_one(small, worker(small))
        small.append_log(lease, "0123456")
        small.append_log(lease, "789abc")
        assert small.get_log("r1", "t0") == "3456789abc"
        small.append_log(lease, "ééééé€")  # 2-byte and 3-byte characters, cut at a boundary
        assert small.get_log("r1", "t0") == "ééé€"
        small.finish(lease, Outcome(succeeded=True, log_tail="done"), now=T0)
        log = small.get_log("r1", "t0", attempt=1)
        assert log.endswith("done")
        assert len(log.encode()) <= 10
    finally:
        small.close()


def test_get_log_defaults_to_the_latest_attempt(store: Store) -> None:
    store.create_run(plans.plan(plans.task("t", retries=1, delay=1)), run_id="r1", now=T0)
    w = worker(store)
    first = claim_one(store, w)
    store.append_log(first, "one")
    store.finish(first, fail(), now=T0)
    second = claim_one(store, w, now=T0 + 1)
    store.append_log(second, "two")
    assert store.get_log("r1", "t") == "two"
    assert store.get_log("r1", "t", attempt=1) == "one"
