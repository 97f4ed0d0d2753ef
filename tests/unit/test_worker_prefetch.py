"""The adaptive prefetch depth's rules, and the mechanism behind its priority bound: held
tasks start highest priority first (docs/ARCHITECTURE.md, "Prefetch and the priority order").

The in-process tests use test_worker's real SqliteStore and fake executor; nothing is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from runner.models import WorkerInfo
from runner.worker._depth import GAIN, MAX_DEPTH, SAMPLES, WINDOW, Depth
from runner.worker._finish import Finisher
from runner.worker._held import Held
from runner.worker._lease import LeaseKeeper
from tests.contract import plans
from tests.unit.test_worker import (
    WAIT,
    CountingStore,
    FakeExecutor,
    Serving,
    executor,
    serve,
    store,
    submit,
    wait_run_done,
)

__all__ = ["executor", "serve", "store"]  # the fixtures this module uses


def measured(depth: Depth, seconds: float, *, times: int = SAMPLES) -> Depth:
    for _ in range(times):
        depth.task_took(seconds)
    return depth


# ---------------------------------------------------------------------- the rules


def test_depth_is_strict_until_tasks_were_measured() -> None:
    depth = Depth(concurrency=4, fixed=None)
    assert depth.current() == 0
    assert depth.batch() == 1
    measured(depth, 0.001, times=SAMPLES - 1)
    assert depth.current() == 0
    depth.task_took(0.001)
    assert depth.current() > 0


@pytest.mark.parametrize("task", [0.0005, 0.002, 0.01, 0.04])
def test_depth_holds_no_more_unstarted_work_than_the_slots_start_in_the_window(
    task: float,
) -> None:
    depth = measured(Depth(concurrency=4, fixed=None), task)
    held = depth.current()
    assert held * task / 4 <= WINDOW  # what the held tasks are expected to take
    assert held == min(MAX_DEPTH, int(4 * WINDOW / task))
    assert depth.batch() == max(1, held // 2)


def test_depth_of_no_op_tasks_is_capped() -> None:
    assert measured(Depth(concurrency=4, fixed=None), 0.0).current() == MAX_DEPTH


def test_long_tasks_are_not_held() -> None:
    depth = measured(Depth(concurrency=4, fixed=None), 4 * WINDOW * 1.01)
    assert depth.current() == 0
    depth = measured(Depth(concurrency=1, fixed=None), 0.2)
    assert depth.current() == 0


def test_tasks_much_longer_than_a_claim_are_not_held() -> None:
    depth = measured(Depth(concurrency=4, fixed=None), 0.01)
    assert depth.current() > 0
    depth.claimed(0.01 / GAIN, asked=4, got=4)
    assert depth.current() == 0  # a claim per task costs little: strict order, no batching
    depth.claimed(0.01, asked=4, got=4)  # the moving average of claim costs rises
    assert depth.current() > 0


def test_a_short_queue_is_claimed_a_task_at_a_time() -> None:
    depth = measured(Depth(concurrency=4, fixed=None), 0.001)
    assert depth.batch() > 1
    depth.claimed(None, asked=100, got=3)
    assert depth.short
    assert depth.batch() == 1
    depth.claimed(None, asked=100, got=64)  # a store may cap what one call claims
    assert not depth.short
    assert depth.batch() > 1


@pytest.mark.parametrize("fixed", [0, 8])
def test_a_fixed_depth_ignores_the_measurements(fixed: int) -> None:
    depth = measured(Depth(concurrency=4, fixed=fixed), 0.0001)
    depth.claimed(0.5, asked=100, got=0)
    assert depth.current() == fixed
    assert depth.batch() == max(1, fixed // 2)
    assert depth.may_prefetch is (fixed > 0)


# ---------------------------------------------------------------------- in a worker


def test_worker_by_default_claims_and_records_short_tasks_in_batches(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(300))
    serving = serve(store, executor, concurrency=2)
    wait_run_done(store, run_id)
    assert serving.worker.prefetch > 0  # the fake's attempts take microseconds
    serving.stop()
    assert set(plans.states(store, run_id).values()) == {"succeeded"}
    assert len(executor.ran) == 300
    assert max(store.claimed + store.handed) > 2  # more than the slots per claim
    assert len(store.finished) < 300  # several outcomes per finish_many


def test_worker_with_prefetch_0_holds_nothing_beyond_its_slots(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(60))
    serving = serve(store, executor, concurrency=2, prefetch=0)
    wait_run_done(store, run_id)
    serving.stop()
    assert serving.worker.prefetch == 0
    assert max(store.claimed + store.handed) <= 2
    assert store.finished == [1] * 60  # each recorded on its own, claiming its successor


def test_a_task_claimed_at_a_higher_priority_starts_before_the_held_ones(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    """The priority bound's mechanism: a worker holding low-priority tasks claims a new
    high-priority one with its next finish, and it runs before the tasks held already."""
    submit(store, plans.fan_out(12))
    first = executor.hold("t0")
    rest = executor.hold(*(f"t{i}" for i in range(1, 12)))
    serving = serve(store, executor, concurrency=1, prefetch=8)
    executor.wait_ran(1)  # t0 runs; t1..t8 are held
    urgent = submit(store, plans.plan(plans.task("urgent", priority=10)))
    first.set()  # t0 ends: the slot takes t1; the recorder records t0 and claims "urgent"
    end = time.monotonic() + WAIT
    while plans.states(store, urgent) != {"urgent": "running"}:
        assert time.monotonic() < end, plans.states(store, urgent)
        store.wait(0.5)
    slots = serving.worker._slots  # the recorder queues it for a slot right after the commit
    while slots.backlog() < 8:  # t2..t8 and urgent wait for the slot that runs t1
        assert time.monotonic() < end, slots.backlog()
        time.sleep(0.005)  # a bounded poll (deadline above): the queue has no event to wait on
    rest.set()
    wait_run_done(store, urgent)
    serving.stop()
    order = [r.task for r in executor.ran]
    assert order[:3] == ["t0", "t1", "urgent"]  # ahead of t2..t8, held before it was claimed


# ---------------------------------------------------------------------- the finisher's report


@pytest.mark.parametrize("claims_queue", [True, False])
def test_a_finish_that_claims_less_than_asked_means_a_short_queue_only_where_finishes_claim_from_it(
    store: CountingStore, executor: FakeExecutor, claims_queue: bool
) -> None:
    """On SQLite a finish claims its room from the queue head, so fewer than asked means the
    queue is short; on etcd a finish only hands over successors it made ready
    (`Store.finish_claims_queue`), so its empty answer says nothing of the queue. Reading it as
    a short queue (it once did) made etcd workers claim one task at a time."""
    store.finish_claims_queue = claims_queue
    submit(store, plans.fan_out(3))  # three independent tasks: no successor to hand over
    held = Held(concurrency=1, prefetch=8)
    keeper = LeaseKeeper(
        store,
        executor,
        held,
        name="w",
        info=lambda: WorkerInfo(id=keeper.id, name="w", host="h", pid=1, capacity=1),
        ttl=30.0,
    )
    keeper.register()
    finisher = Finisher(store, held, keeper, labels={}, may_claim=keeper.may_claim)
    (lease,) = store.claim(keeper.id, now=time.time(), limit=1)
    slot = held.hold(lease)
    assert not held.depth.short
    finisher.finish_many([(slot, plans.ok())])  # asks for 9 (a slot + 8), the queue has 2
    assert held.depth.short is claims_queue
