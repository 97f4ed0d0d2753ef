"""Store contract: run semantics (when, retries, failFast, parallelism, cancel, retry, timeout)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from runner import engine, errors
from runner.models import AttemptState, Lease, Outcome, Reason, Run, RunState, TaskState, When
from runner.store import Store
from tests.contract import plans
from tests.contract.conftest import WITH_WIDE, url_for
from tests.contract.plans import T0, claim_one, drain, fail, ok, states, task, worker


@pytest.fixture(params=WITH_WIDE)
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Also "etcd-wide": dependencies counted as a wide task's (see conftest)."""
    return url_for(request, tmp_path, monkeypatch)


def _fail_ids(*ids: str) -> Callable[[Lease], Outcome]:
    return lambda lease: fail() if lease.task_id in ids else ok()


# ------------------------------------------------------------------ retries


def test_retry_waits_for_backoff_without_blocking_other_tasks(store: Store) -> None:
    flaky = task("flaky", retries=2, delay=10.0, priority=9)
    store.create_run(plans.plan(flaky, task("other")), run_id="r1", now=T0)
    w = worker(store)
    store.finish(claim_one(store, w), fail(), now=T0)
    rec = store.get_run("r1").tasks[0]
    assert rec.state is TaskState.RETRYING
    assert rec.waiting_reason is not None
    assert rec.waiting_reason.startswith("retry after backoff until ")
    assert [x.task_id for x in store.claim(w, now=T0 + 9.9, limit=5)] == ["other"]
    assert store.claim(w, now=T0 + 9.9) == []
    again = claim_one(store, w, now=T0 + 10.0)
    assert (again.task_id, again.attempt) == ("flaky", 2)
    store.finish(again, fail(), now=T0 + 10)
    assert store.claim(w, now=T0 + 10 + 19.9) == []  # exponential: 10 s, then 20 s
    third = claim_one(store, w, now=T0 + 30.0)
    store.finish(third, ok(), now=T0 + 30)
    assert states(store, "r1")["flaky"] == "succeeded"


def test_retries_exhausted_fail_the_task_and_run(store: Store) -> None:
    store.create_run(plans.plan(task("t", retries=1, delay=1.0)), run_id="r1", now=T0)
    w = worker(store)
    store.finish(claim_one(store, w), fail(), now=T0)
    store.finish(claim_one(store, w, now=T0 + 1), fail(2), now=T0 + 1)
    run = store.get_run("r1")
    assert run.state is RunState.FAILED
    assert run.finished_at == T0 + 1
    assert [(a.state, a.exit_code) for a in run.tasks[0].attempts] == [
        (AttemptState.FAILED, 1),
        (AttemptState.FAILED, 2),
    ]


# ------------------------------------------------------------------ when, allowFailure, failFast


def test_when_failure_runs_and_success_dependents_skip_in_cascade(store: Store) -> None:
    p = plans.plan(
        task("build"),
        task("test", "build"),
        task("deploy", "test"),
        task("notify", "build", when=When.FAILURE),
        task("cleanup", "deploy", when=When.ALWAYS),
    )
    store.create_run(p, run_id="r1", now=T0)
    order = drain(store, worker(store), outcome=_fail_ids("build"))
    assert order == ["build", "notify", "cleanup"]
    assert states(store, "r1") == {
        "build": "failed",
        "test": "skipped",
        "deploy": "skipped",
        "notify": "succeeded",
        "cleanup": "succeeded",
    }
    run = store.get_run("r1")
    assert (run.state, run.tasks_done) == (RunState.FAILED, 5)


def test_when_failure_is_skipped_after_success(store: Store) -> None:
    store.create_run(plans.plan(task("a"), task("b", "a", when=When.FAILURE)), run_id="r1", now=T0)
    drain(store, worker(store))
    assert states(store, "r1") == {"a": "succeeded", "b": "skipped"}
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_allow_failure_lets_dependents_run_and_run_succeed(store: Store) -> None:
    p = plans.plan(task("lint", allow_failure=True), task("ship", "lint"))
    store.create_run(p, run_id="r1", now=T0)
    drain(store, worker(store), outcome=_fail_ids("lint"))
    assert states(store, "r1") == {"lint": "failed", "ship": "succeeded"}
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_independent_branch_continues_after_a_failure(store: Store) -> None:
    p = plans.plan(task("a"), task("b", "a"), task("x"), task("y", "x"))
    store.create_run(p, run_id="r1", now=T0)
    drain(store, worker(store), outcome=_fail_ids("a"))
    assert states(store, "r1") == {
        "a": "failed",
        "b": "skipped",
        "x": "succeeded",
        "y": "succeeded",
    }


def test_fail_fast_cancels_not_started_tasks(store: Store) -> None:
    p = plans.plan(task("a"), task("b"), task("c"), task("d", "c"), fail_fast=True)
    store.create_run(p, run_id="r1", now=T0)
    w = worker(store)
    a, b = store.claim(w, now=T0, limit=2)
    store.finish(a, fail(), now=T0)
    assert states(store, "r1") == {
        "a": "failed",
        "b": "running",
        "c": "cancelled",
        "d": "cancelled",
    }
    assert store.claim(w, now=T0) == []
    store.finish(b, ok(), now=T0)
    assert store.get_run("r1").state is RunState.FAILED


def test_parallelism_limits_running_tasks_of_a_run(store: Store) -> None:
    store.create_run(plans.fan_out(5, parallelism=2), run_id="r1", now=T0)
    store.create_run(plans.fan_out(1), run_id="r2", now=T0)
    w = worker(store)
    first = store.claim(w, now=T0, limit=10)
    assert sorted(x.key for x in first) == [("r1", "t0"), ("r1", "t1"), ("r2", "t0")]
    assert store.claim(w, now=T0) == []
    store.finish(first[0], ok(), now=T0)
    assert [x.key for x in store.claim(w, now=T0, limit=10)] == [("r1", "t2")]


# ------------------------------------------------------------------ cancel, retry, timeout


def test_cancel_run_cancels_queued_and_aborts_running(store: Store) -> None:
    store.create_run(plans.plan(task("a"), task("b"), task("c", "a")), run_id="r1", now=T0)
    w = worker(store)
    running = claim_one(store, w)
    run = store.cancel_run("r1", now=T0 + 1)
    assert (run.state, run.finished_at) == (RunState.CANCELLED, T0 + 1)
    assert states(store, "r1") == {"a": "running", "b": "cancelled", "c": "cancelled"}
    assert store.heartbeat(w, now=T0 + 2, ttl=plans.TTL, running=1).abort == {("r1", "a")}
    assert store.claim(w, now=T0 + 2) == []
    cancelled = Outcome(succeeded=False, reason=Reason.CANCELLED, exit_code=-15)
    store.finish(running, cancelled, now=T0 + 3)
    run = store.get_run("r1")
    assert (run.state, run.tasks_done) == (RunState.CANCELLED, 3)
    assert states(store, "r1")["a"] == "cancelled"
    assert run.tasks[0].attempts[0].state is AttemptState.CANCELLED
    assert store.heartbeat(w, now=T0 + 4, ttl=plans.TTL, running=0).abort == frozenset()


def test_cancel_run_of_a_finished_run_changes_nothing(store: Store) -> None:
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    drain(store, worker(store))
    assert store.cancel_run("r1", now=T0 + 5).state is RunState.SUCCEEDED
    with pytest.raises(errors.RunNotFound):
        store.cancel_run("nope", now=T0)


def test_retry_run_reruns_failed_and_skipped_and_keeps_succeeded(store: Store) -> None:
    p = plans.plan(task("a"), task("b", "a"), task("c", "b"), task("x"))
    store.create_run(p, run_id="r1", now=T0)
    w = worker(store)
    with pytest.raises(errors.UsageError):
        store.retry_run("r1", now=T0)
    drain(store, w, outcome=_fail_ids("b"))
    before = store.get_run("r1")
    assert store.retry_run("r1", now=T0 + 1, dry_run=True) == ["b", "c"]
    assert store.get_run("r1") == before
    assert store.retry_run("r1", now=T0 + 1) == ["b", "c"]
    run = store.get_run("r1")
    assert run.state is RunState.RUNNING
    assert states(store, "r1") == {"a": "succeeded", "b": "ready", "c": "pending", "x": "succeeded"}
    assert drain(store, w, now=T0 + 1) == ["b", "c"]
    run = store.get_run("r1")
    assert run.state is RunState.SUCCEEDED
    assert [a.number for a in run.tasks[1].attempts] == [1, 2]


def test_retry_run_reruns_cancelled_tasks(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    store.cancel_run("r1", now=T0)
    assert store.retry_run("r1", now=T0 + 1) == ["t0", "t1"]
    assert drain(store, worker(store), now=T0 + 1) == ["t0", "t1"]
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_retry_run_skips_again_what_its_kept_dependencies_skip_and_the_run_ends(
    store: Store,
) -> None:
    # b runs only on a failure of a; a succeeded, so a retry skips b again, and c after it
    store.create_run(
        plans.plan(task("a"), task("b", "a", when=When.FAILURE), task("c", "b")),
        run_id="r1",
        now=T0,
    )
    w = worker(store)
    assert drain(store, w) == ["a"]
    assert store.retry_run("r1", now=T0 + 1) == ["b", "c"]
    assert states(store, "r1") == {"a": "succeeded", "b": "skipped", "c": "skipped"}
    assert store.get_run("r1").state is RunState.SUCCEEDED
    assert store.claim(w, now=T0 + 1) == []


def test_run_timeout_fails_run_via_sweep(store: Store) -> None:
    store.create_run(
        plans.plan(task("a"), task("b"), task("c", "a"), timeout=60), run_id="r1", now=T0
    )
    w = worker(store)
    running = claim_one(store, w)
    assert store.sweep(now=T0 + 59) == []
    changed = store.sweep(now=T0 + 61)
    assert sorted(changed) == [("r1", "b"), ("r1", "c")]
    run = store.get_run("r1")
    assert (run.state, run.reason) == (RunState.FAILED, "timeout")
    assert store.heartbeat(w, now=T0 + 61, ttl=plans.TTL, running=1).abort == {("r1", "a")}
    store.finish(running, ok(), now=T0 + 62)
    assert states(store, "r1") == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert store.get_run("r1").state is RunState.FAILED


def test_a_follower_near_the_runs_end_reads_at_once_when_woken(store: Store) -> None:
    """A follower reads a busy run's summary at most every `min_gap` seconds, but not near its
    end: that throttle stood between the last task's end and `runner apply`'s exit."""
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    w = worker(store)
    store.finish(claim_one(store, w), ok(), now=T0)
    last = claim_one(store, w)
    read = threading.Event()
    ended: list[Run] = []

    def follower() -> None:
        ended.append(engine.follow(store, "r1", tasks=False, min_gap=60.0, on_summary=on_read))

    def on_read(summary: Run) -> None:
        read.set()

    thread = threading.Thread(target=follower, daemon=True)
    thread.start()
    assert read.wait(20)  # it has read the summary: 1 task of 2 done, the other running
    store.finish(last, ok(), now=T0)
    thread.join(timeout=20)  # a throttled follower would sleep 60 s before its next read
    assert [r.state for r in ended] == [RunState.SUCCEEDED]


def test_follow_returns_the_ended_run_with_or_without_its_tasks(store: Store) -> None:
    store.create_run(plans.linear(2), run_id="r1", now=T0)
    w = worker(store)
    for _ in range(2):
        store.finish(claim_one(store, w), ok(), now=T0)
    whole = engine.follow(store, "r1")
    summary = engine.follow(store, "r1", tasks=False)
    assert whole.state is summary.state is RunState.SUCCEEDED
    assert [t.state for t in whole.tasks] == [TaskState.SUCCEEDED] * 2
    assert not summary.tasks
    assert summary.tasks_done == summary.tasks_total == 2
