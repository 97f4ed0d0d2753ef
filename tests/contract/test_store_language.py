"""Store contract for the workflow language's run-time parts: `if:` decided when a task becomes
ready, forEach expanded in the transaction that finds it ready, priority aging in the claim
order (docs/WORKFLOW.md). Protocol-only, on every backend."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from runner.models import Aging, ForEach, Plan, RunState, TaskSpec, TaskState
from runner.store import Store
from tests.contract import plans
from tests.contract.conftest import WITH_WIDE, url_for
from tests.contract.plans import T0, claim_one, drain, fail, ok, states, worker


@pytest.fixture(params=WITH_WIDE)
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Also "etcd-wide": an expanded task waits for its instances as a wide task."""
    return url_for(request, tmp_path, monkeypatch)


def gated(task: TaskSpec, condition: str) -> TaskSpec:
    return dataclasses.replace(task, if_=condition)


def for_each(name: str, producer: str, *, run: str, limit: int = 10_000) -> TaskSpec:
    fe = ForEach(task=producer, output="items", limit=limit)
    return dataclasses.replace(plans.task(name, producer, run=run), for_each=fe)


def finish_with(store: Store, w: str, task_id: str, **outputs: str) -> None:
    lease = claim_one(store, w)
    assert lease.task_id == task_id
    store.finish(lease, ok(**outputs), now=T0)


# ------------------------------------------------------------------ if:

CONDITION = "${{ params.env == 'prod' and tasks.check.outputs.changed == 'true' }}"


def conditional(env: str) -> Plan:
    return plans.plan(
        plans.task("check"),
        gated(plans.task("deploy", "check"), CONDITION),
        plans.task("after", "deploy"),
        params={"env": env},
    )


def test_a_false_condition_skips_the_task_with_its_reason(store: Store) -> None:
    store.create_run(conditional("dev"), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "check", changed="true")
    run = store.get_run("r1")
    by_id = {t.id: t for t in run.tasks}
    assert by_id["deploy"].state is TaskState.SKIPPED
    assert by_id["deploy"].waiting_reason == f"skipped: if {CONDITION} is false"
    assert by_id["after"].state is TaskState.SKIPPED  # skips cascade as usual
    assert not by_id["deploy"].attempts
    assert run.state is RunState.SUCCEEDED


def test_a_true_condition_queues_the_task(store: Store) -> None:
    store.create_run(conditional("prod"), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "check", changed="true")
    assert drain(store, w) == ["deploy", "after"]
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_the_condition_reads_the_upstream_output_when_the_task_becomes_ready(
    store: Store,
) -> None:
    store.create_run(conditional("prod"), run_id="r1", now=T0)
    finish_with(store, worker(store), "check", changed="false")
    assert states(store, "r1") == {"check": "succeeded", "deploy": "skipped", "after": "skipped"}


def test_a_root_task_condition_is_decided_when_the_run_is_created(store: Store) -> None:
    p = plans.plan(
        gated(plans.task("only-prod"), "${{ params.env == 'prod' }}"),
        plans.task("always"),
        params={"env": "dev"},
    )
    store.create_run(p, run_id="r1", now=T0)
    assert states(store, "r1") == {"only-prod": "skipped", "always": "ready"}
    assert drain(store, worker(store)) == ["always"]
    assert store.get_run("r1").state is RunState.SUCCEEDED


# ------------------------------------------------------------------ forEach


def fan_plan(limit: int = 10_000) -> Plan:
    return plans.plan(
        plans.task("list"),
        for_each("each", "list", run="echo ${{ item.n }}", limit=limit),
        plans.task("join", "each"),
    )


def test_for_each_makes_one_instance_per_item_and_the_join_waits_for_all(store: Store) -> None:
    store.create_run(fan_plan(), run_id="r1", now=T0)
    w = worker(store)
    items = [{"n": "a b"}, {"n": "c;d"}, {"n": "e"}]
    finish_with(store, w, "list", items=json.dumps(items))
    run = store.get_run("r1")
    assert run.tasks_total == 6
    by_id = {t.id: t for t in run.tasks}
    assert [by_id[f"each[i={i}]"].state for i in range(3)] == [TaskState.READY] * 3
    assert by_id["each"].state is TaskState.PENDING
    assert by_id["each"].waiting_reason == "waiting for 3 dependencies"
    # the run's DAG: list -> each[i=N] -> each -> join
    assert by_id["each"].depends == ("each[i=0]", "each[i=1]", "each[i=2]")
    assert by_id["each[i=1]"].depends == ("list",)
    leases = sorted(store.claim(w, now=T0, limit=10), key=lambda x: x.task_id)
    assert [x.task_id for x in leases] == ["each[i=0]", "each[i=1]", "each[i=2]"]
    assert [x.spec.run for x in leases] == ["echo 'a b'", "echo 'c;d'", "echo e"]
    for lease in leases[:2]:
        store.finish(lease, ok(), now=T0)
    assert states(store, "r1")["join"] == "pending"
    store.finish(leases[2], ok(), now=T0)
    assert states(store, "r1")["each"] == "succeeded"
    assert drain(store, w) == ["join"]
    run = store.get_run("r1")
    assert (run.state, run.tasks_done, run.tasks_total) == (RunState.SUCCEEDED, 6, 6)


def test_a_failed_instance_fails_the_expanded_task(store: Store) -> None:
    store.create_run(fan_plan(), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "list", items=json.dumps([{"n": i} for i in range(40)]))
    drain(store, w, outcome=lambda lease: fail() if lease.task_id == "each[i=7]" else ok())
    got = states(store, "r1")
    assert (got["each"], got["each[i=7]"], got["join"]) == ("failed", "failed", "skipped")
    assert store.get_run("r1").state is RunState.FAILED


def test_retry_reruns_the_failed_instances_then_the_join(store: Store) -> None:
    store.create_run(fan_plan(), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "list", items=json.dumps([{"n": i} for i in range(40)]))
    drain(store, w, outcome=lambda lease: fail() if lease.task_id == "each[i=7]" else ok())
    assert store.retry_run("r1", now=T0 + 1) == ["each", "join", "each[i=7]"]
    assert drain(store, w, now=T0 + 1) == ["each[i=7]", "join"]
    run = store.get_run("r1")
    assert run.state is RunState.SUCCEEDED
    assert {t.id: t.state for t in run.tasks}["each"] is TaskState.SUCCEEDED


def test_retry_decides_a_skipped_condition_again(store: Store) -> None:
    store.create_run(conditional("prod"), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "check", changed="false")
    assert store.retry_run("r1", now=T0 + 1) == ["deploy", "after"]
    assert states(store, "r1")["deploy"] == "skipped"  # the output is still "false"
    assert store.get_run("r1").state is RunState.SUCCEEDED


def test_an_empty_list_succeeds_without_instances(store: Store) -> None:
    store.create_run(fan_plan(), run_id="r1", now=T0)
    w = worker(store)
    finish_with(store, w, "list", items="[]")
    assert drain(store, w) == ["join"]
    assert states(store, "r1") == {"list": "succeeded", "each": "succeeded", "join": "succeeded"}


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ("[1, 2, 3, 4]", "has 4 items, more than the limit of 3"),
        ("{not json", "is not JSON"),
        ('{"a": 1}', "is a JSON dict, not a list"),
    ],
)
def test_an_output_that_cannot_be_expanded_fails_the_task_with_a_reason(
    store: Store, items: str, reason: str
) -> None:
    store.create_run(fan_plan(limit=3), run_id="r1", now=T0)
    finish_with(store, worker(store), "list", items=items)
    run = store.get_run("r1")
    each = {t.id: t for t in run.tasks}["each"]
    assert each.state is TaskState.FAILED
    assert each.waiting_reason is not None
    assert reason in each.waiting_reason
    assert "forEach: tasks.list.outputs.items" in each.waiting_reason
    assert run.state is RunState.FAILED
    assert run.tasks_total == 3


# ------------------------------------------------------------------ aging


def aging_runs(store: Store, *, later: float) -> None:
    """A low-priority task of an aging run queued at T0, a high one queued at `later`."""
    aged = plans.plan(plans.task("low"), aging=Aging(every=60.0, by=1), workflow="aged")
    store.create_run(aged, run_id="r1", now=T0)
    store.create_run(plans.plan(plans.task("high", priority=5)), run_id="r2", now=later)


def test_aging_lets_a_long_waiting_task_overtake_higher_priorities(store: Store) -> None:
    now = T0 + 6 * 60  # waited 6 steps: 0 + 6 > 5
    aging_runs(store, later=now)
    store.sweep(now=now)  # etcd promotes aged queue entries at each sweep
    assert drain(store, worker(store), now=now) == ["low", "high"]


def test_aging_keeps_priority_order_until_the_task_has_waited_enough(store: Store) -> None:
    now = T0 + 4 * 60  # 0 + 4 < 5
    aging_runs(store, later=now)
    store.sweep(now=now)
    assert drain(store, worker(store), now=now) == ["high", "low"]
