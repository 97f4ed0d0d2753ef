"""runner.dispatch: the strategies' distributions, eligibility, locks and waiting reasons."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from runner import dispatch
from runner.models import DispatchView, Kind, ReadyTask, Semaphore, TaskSpec, WorkerInfo


def _workers(*weights: int, capacity: int = 10_000) -> list[WorkerInfo]:
    return [
        WorkerInfo(id=f"w{i}-id", name=f"w{i}", weight=w, capacity=capacity)
        for i, w in enumerate(weights)
    ]


def _tasks(n: int, **fields: object) -> tuple[ReadyTask, ...]:
    return tuple(ReadyTask(run_id="r", task_id=f"t{i}", **fields) for i in range(n))  # type: ignore[arg-type]


def _counts(strategy: str, workers: list[WorkerInfo], n: int, seed: int = 7) -> Counter[str]:
    view = DispatchView(workers=tuple(workers), tasks=_tasks(n))
    state = dispatch.DispatchState(rng=random.Random(seed))
    return Counter(w for _, w in dispatch.plan_assignments(view, default=strategy, state=state))


def test_round_robin_is_equal_within_one() -> None:
    for n in (6, 100, 601):
        counts = _counts("round_robin", _workers(1, 5, 1, 1), n)
        assert sum(counts.values()) == n
        assert max(counts.values()) - min(counts.values()) <= 1


def test_round_robin_continues_across_passes() -> None:
    workers = tuple(_workers(1, 1, 1))
    state = dispatch.DispatchState()
    got = []
    for _ in range(4):
        view = DispatchView(workers=workers, tasks=_tasks(1))
        got += [w for _, w in dispatch.plan_assignments(view, default="round_robin", state=state)]
    assert got == ["w0-id", "w1-id", "w2-id", "w0-id"]


def test_weighted_follows_weights_within_ten_percent_over_600() -> None:
    counts = _counts("weighted", _workers(1, 2, 3), 600)
    for worker_id, share in (("w0-id", 100), ("w1-id", 200), ("w2-id", 300)):
        assert abs(counts[worker_id] - share) <= share * 0.10
    assert counts == {"w0-id": 100, "w1-id": 200, "w2-id": 300}  # smooth WRR is exact


def test_least_load_picks_the_fewest_running_per_capacity() -> None:
    workers = [
        WorkerInfo(id="busy", name="busy", capacity=4, running=3),
        WorkerInfo(id="half", name="half", capacity=4, running=2),
        WorkerInfo(id="big", name="big", capacity=10, running=4),
    ]
    view = DispatchView(workers=tuple(workers), tasks=_tasks(1))
    plan = dispatch.plan_assignments(view, default="least_load", state=dispatch.DispatchState())
    assert plan == [(("r", "t0"), "big")]  # 0.4 < 0.5 < 0.75


def test_least_load_fills_to_equal_ratios() -> None:
    workers = [
        WorkerInfo(id="a", name="a", capacity=2, running=2),
        WorkerInfo(id="b", name="b", capacity=4),
    ]
    view = DispatchView(workers=tuple(workers), tasks=_tasks(3))
    plan = dispatch.plan_assignments(view, default="least_load", state=dispatch.DispatchState())
    assert [w for _, w in plan] == ["b", "b", "b"]  # a is full


def test_random_with_a_seeded_rng_passes_chi_squared() -> None:
    n, k = 6000, 4
    counts = _counts("random", _workers(1, 1, 1, 1), n, seed=12345)
    expected = n / k
    chi2 = sum((counts[f"w{i}-id"] - expected) ** 2 / expected for i in range(k))
    assert chi2 < 16.27  # chi-squared, 3 degrees of freedom, p = 0.001
    assert _counts("random", _workers(1, 1, 1, 1), 50, seed=1) == _counts(
        "random", _workers(1, 1, 1, 1), 50, seed=1
    )


@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "least_load", "random"])
def test_only_matching_live_workers_with_free_slots_are_chosen(strategy: str) -> None:
    workers = (
        WorkerInfo(id="gpu", name="gpu", labels={"gpu": "true"}, capacity=2, assigned=1),
        WorkerInfo(id="cpu", name="cpu", capacity=5),
        WorkerInfo(id="gpu2", name="gpu2", labels={"gpu": "true"}, capacity=5, draining=True),
    )
    tasks = _tasks(3, selector={"gpu": "true"})
    view = DispatchView(workers=workers, tasks=tasks)
    plan = dispatch.plan_assignments(view, default=strategy, state=dispatch.DispatchState())
    assert plan == [(("r", "t0"), "gpu")]  # one free slot; the rest stay queued


def test_strict_turns_wait_for_a_busy_worker() -> None:
    workers = (
        WorkerInfo(id="a", name="a", capacity=1, running=1),
        WorkerInfo(id="b", name="b", capacity=1),
    )
    state = dispatch.DispatchState()
    view = DispatchView(workers=workers, tasks=_tasks(2))
    assert dispatch.plan_assignments(view, default="round_robin", state=state) == []
    freed = (dataclasses.replace(workers[0], running=0), workers[1])
    plan = dispatch.plan_assignments(
        DispatchView(workers=freed, tasks=_tasks(2)), default="round_robin", state=state
    )
    assert [w for _, w in plan] == ["a", "b"]


def test_random_keeps_its_draw_while_the_worker_is_busy() -> None:
    busy = WorkerInfo(id="busy", name="busy", capacity=1, running=1)
    idle = WorkerInfo(id="idle", name="idle", capacity=1)
    state = dispatch.DispatchState(rng=random.Random(3))
    key = ("r", "t")
    first = dispatch.choose("random", [busy, idle], state, {"busy": 1, "idle": 0}, key)
    drawn = state.drawn.get(key)
    again = dispatch.choose("random", [busy, idle], state, {"busy": 1, "idle": 0}, key)
    assert (first, again) == ((None, None) if drawn == "busy" else (idle, idle))
    if drawn == "busy":
        chosen = dispatch.choose("random", [busy, idle], state, {"busy": 0, "idle": 0}, key)
        assert chosen is busy


def test_weighted_shares_hold_when_slots_bind() -> None:
    workers = _workers(1, 2, 3, capacity=2)
    state = dispatch.DispatchState()
    counts: Counter[str] = Counter()
    for _ in range(300):  # every pass: each worker has finished what it was given
        plan = dispatch.plan_assignments(
            DispatchView(workers=tuple(workers), tasks=_tasks(6)), default="weighted", state=state
        )
        counts.update(w for _, w in plan)
    total = sum(counts.values())
    assert abs(counts["w2-id"] / total - 0.5) < 0.05
    assert abs(counts["w0-id"] / total - 1 / 6) < 0.05


def test_pull_tasks_are_not_assigned_and_run_strategy_wins() -> None:
    tasks = (
        ReadyTask(run_id="r", task_id="a"),
        ReadyTask(run_id="r2", task_id="b", dispatch="weighted"),
        ReadyTask(run_id="r3", task_id="c", dispatch="pull"),
    )
    view = DispatchView(workers=tuple(_workers(1)), tasks=tasks)
    plan = dispatch.plan_assignments(view, default="pull", state=dispatch.DispatchState())
    assert plan == [(("r2", "b"), "w0-id")]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dispatch strategy"):
        dispatch.choose("fastest", _workers(1), dispatch.DispatchState(), {"w0-id": 0})


def test_task_locks_and_lock_reasons() -> None:
    pool = Semaphore(name="pool", limit=3)
    spec = TaskSpec(id="t", name="t", kind=Kind.RUN, run="true", mutex="db", semaphore=pool)
    locks = dispatch.task_locks(spec)
    assert locks == [("mutex:db", 1), ("semaphore:pool", 3)]
    assert dispatch.locks_free(locks, {"semaphore:pool": 2})
    assert dispatch.lock_reason(locks, {"mutex:db": 1}) == "waiting: mutex db is held"
    assert dispatch.lock_reason(locks, {"semaphore:pool": 3}) == (
        "waiting: semaphore pool at its limit 3"
    )
    assert dispatch.lock_reason(locks, {}) is None


def test_no_worker_reason_names_the_selector() -> None:
    workers = [WorkerInfo(id="a", name="a", labels={"gpu": "false"})]
    reason = dispatch.no_worker_reason({"zone": "b", "gpu": "true"}, workers)
    assert reason == "waiting: no live worker matches gpu=true,zone=b"
    assert dispatch.no_worker_reason({}, []) is None
    assert dispatch.no_worker_reason({"gpu": "false"}, workers) is None
