"""Store contract: a streamed plan (models.StreamedTasks, made again on each pass) is stored as
the same plan held whole would be: its tasks in order, its roots queued, its gates decided, its
dependencies kept. On every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from runner.models import Plan, StreamedTasks, TaskSpec, TaskState
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import T0, drain, states, worker


def specs() -> Iterator[TaskSpec]:
    """Twenty roots, a task after all of them, a gated task after that, a last one."""
    yield from (plans.task(f"r{i}", priority=i % 3) for i in range(20))
    roots = tuple(f"r{i}" for i in range(20))
    yield plans.task("join", *roots)
    yield dataclasses.replace(plans.task("gated", "join"), if_="${{ params.go == 'yes' }}")
    yield plans.task("last", "gated")


def streamed(passes: list[int], go: str) -> Plan:
    def make() -> Iterator[TaskSpec]:
        passes.append(1)
        return specs()

    held = plans.plan(*specs(), params={"go": go})
    return dataclasses.replace(held, tasks=StreamedTasks(make, len(held.tasks)))


def test_a_streamed_plan_is_stored_and_runs_as_the_held_one(store: Store) -> None:
    passes: list[int] = []
    store.create_run(streamed(passes, "yes"), run_id="s", now=T0)
    store.create_run(plans.plan(*specs(), params={"go": "yes"}), run_id="h", now=T0)
    assert [t.id for t in store.get_run("s").tasks] == [t.id for t in store.get_run("h").tasks]
    assert states(store, "s") == states(store, "h")
    w = worker(store)
    order = drain(store, w)
    assert sorted(order) == sorted([t.id for t in specs()] * 2)
    assert states(store, "s") == states(store, "h")
    assert set(states(store, "s").values()) == {"succeeded"}
    assert store.get_run("s").state.value == "succeeded"
    assert len(passes) <= 1  # SQLite makes the tasks once; etcd once as well


def test_a_streamed_plans_gate_is_decided_when_its_task_is_ready(store: Store) -> None:
    store.create_run(streamed([], "no"), run_id="s", now=T0)
    drain(store, worker(store))
    got = states(store, "s")
    assert got["join"] == "succeeded"
    assert got["gated"] == "skipped"
    assert got["last"] == "skipped"
    assert store.get_run("s").tasks_total == 23


def test_a_run_read_with_states_has_only_those_tasks_and_their_attempts(store: Store) -> None:
    store.create_run(plans.plan(*specs(), params={"go": "yes"}), run_id="r", now=T0)
    w = worker(store)
    drain(store, w, outcome=lambda lease: plans.fail() if lease.task_id == "r3" else plans.ok())
    run = store.get_run("r", states=(TaskState.FAILED,))
    assert [t.id for t in run.tasks] == ["r3"]
    assert [a.state.value for a in run.tasks[0].attempts] == ["failed"]
    assert run.state.value == "failed"
    assert run.tasks_total == 23
    skipped = store.get_run("r", states=(TaskState.SKIPPED, TaskState.SUCCEEDED))
    assert len(skipped.tasks) == 22
    assert [t.id for t in skipped.tasks][-3:] == ["join", "gated", "last"]
