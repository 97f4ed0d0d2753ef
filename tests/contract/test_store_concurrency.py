"""Store contract: concurrent claimers (threads and processes), join successors, wait()."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from runner.models import Lease, RunState
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import T0, claim_one, ok, states, worker

TASKS = 200


def _run_threads(bodies: list[Callable[[], object]]) -> None:
    """Run the bodies in threads started together; re-raise the first error."""
    barrier = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def main(body: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=30)
            body()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a claimer thread hung"
    if errors:
        raise errors[0]


def _claimer(store: Store, claimed: list[Lease]) -> Callable[[], None]:
    def body() -> None:
        w = worker(store)
        while leases := store.claim(w, now=T0, limit=3):
            for lease in leases:
                claimed.append(lease)
                store.finish(lease, ok(), now=T0)

    return body


def _assert_each_claimed_once(store: Store, run_id: str, claimed: list[Lease]) -> None:
    counts = Counter(lease.task_id for lease in claimed)
    assert set(counts) == {f"t{i}" for i in range(TASKS)}
    assert max(counts.values()) == 1
    assert len({lease.token for lease in claimed}) == len(claimed)
    run = store.get_run(run_id)
    assert (run.state, run.tasks_done) == (RunState.SUCCEEDED, TASKS)
    assert all(len(t.attempts) == 1 for t in run.tasks)


def test_claim_from_threads_with_own_stores_claims_each_task_once(stores: list[Store]) -> None:
    stores[0].create_run(plans.fan_out(TASKS), run_id="r1", now=T0)
    claimed: list[Lease] = []
    _run_threads([_claimer(s, claimed) for s in stores])
    _assert_each_claimed_once(stores[0], "r1", claimed)


def test_claim_from_threads_sharing_a_store_claims_each_task_once(store: Store) -> None:
    store.create_run(plans.fan_out(TASKS), run_id="r1", now=T0)
    claimed: list[Lease] = []
    _run_threads([_claimer(store, claimed) for _ in range(4)])
    _assert_each_claimed_once(store, "r1", claimed)


def test_claim_from_processes_claims_each_task_once(store_url: str, store: Store) -> None:
    store.create_run(plans.fan_out(TASKS), run_id="r1", now=T0)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=plans.claim_all, args=(store_url, f"p{i}", barrier, out))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    claimed = [item for _ in procs for item in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    counts = Counter(task_id for _run, task_id, _attempt, _token in claimed)
    assert set(counts) == {f"t{i}" for i in range(TASKS)}
    assert max(counts.values()) == 1
    assert len({token for *_rest, token in claimed}) == TASKS
    assert store.get_run("r1").state is RunState.SUCCEEDED


def _diamond_before_join(store: Store) -> tuple[str, Lease, Lease]:
    """A diamond run with `a` done and `b`, `c` claimed: (worker, lease of b, lease of c)."""
    store.create_run(plans.diamond(), run_id="r1", now=T0)
    w = worker(store)
    store.finish(claim_one(store, w), ok(), now=T0)
    b, c = store.claim(w, now=T0, limit=2)
    return w, b, c


@pytest.mark.parametrize("round_", range(15))
def test_join_successor_is_queued_once_when_predecessors_finish_together(
    stores: list[Store], round_: int
) -> None:
    w, b, c = _diamond_before_join(stores[0])
    _run_threads(
        [
            lambda: stores[1].finish(b, ok(), now=T0),
            lambda: stores[2].finish(c, ok(), now=T0),
        ]
    )
    assert states(stores[0], "r1")["d"] == "ready"
    assert [x.task_id for x in stores[3].claim(w, now=T0, limit=5)] == ["d"]
    assert stores[3].claim(w, now=T0) == []


@pytest.mark.parametrize("round_", range(5))
def test_join_successor_is_claimed_once_by_finishes_that_claim(
    stores: list[Store], round_: int
) -> None:
    _, b, c = _diamond_before_join(stores[0])
    got: list[list[Lease]] = []
    _run_threads(
        [
            lambda: got.append(stores[1].finish(b, ok(), now=T0, claim=1)),
            lambda: got.append(stores[2].finish(c, ok(), now=T0, claim=1)),
        ]
    )
    claimed = [lease.task_id for leases in got for lease in leases]
    assert claimed == ["d"]  # the later finish queued d and claimed it; never both
    assert len(stores[0].get_run("r1").tasks[3].attempts) == 1


def test_wait_returns_true_soon_after_another_store_commits(stores: list[Store]) -> None:
    waiter, writer = stores[0], stores[1]
    waiter.list_runs()  # what this thread has seen so far
    result: list[bool] = []
    ready = threading.Event()

    def body() -> None:
        waiter.list_runs()
        ready.set()
        result.append(waiter.wait(20.0))

    thread = threading.Thread(target=body)
    thread.start()
    assert ready.wait(10)
    started = time.monotonic()
    writer.create_run(plans.linear(1), run_id="r1", now=T0)
    thread.join(timeout=30)
    assert result == [True]
    assert time.monotonic() - started < 10.0  # woken by the commit, not by the timeout


def test_wait_wakes_a_thread_of_the_same_store_object(store: Store) -> None:
    result: list[bool] = []
    ready = threading.Event()

    def body() -> None:
        store.list_runs()
        ready.set()
        result.append(store.wait(20.0))

    thread = threading.Thread(target=body)
    thread.start()
    assert ready.wait(10)
    store.create_run(plans.linear(1), run_id="r1", now=T0)
    thread.join(timeout=30)
    assert result == [True]


def test_wait_returns_false_on_timeout(store: Store) -> None:
    store.list_runs()
    assert store.wait(0.05) is False
