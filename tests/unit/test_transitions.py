"""The pure rules of a run's state machine (runner/transitions.py), shared by both stores."""

from __future__ import annotations

import pytest

from runner import transitions
from runner.models import (
    JSON,
    Backoff,
    Kind,
    Reason,
    RetryPolicy,
    RunState,
    TaskSpec,
    TaskState,
    When,
)

S, F, K, C = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED


def spec(
    *,
    run: str | None = "true",
    args: tuple[str, ...] | None = None,
    with_: dict[str, JSON] | None = None,
    env: dict[str, str] | None = None,
    retries: RetryPolicy | None = None,
) -> TaskSpec:
    return TaskSpec(
        id="t",
        name="t",
        kind=Kind.RUN,
        run=run,
        args=args,
        with_=dict(with_ or {}),
        env=dict(env or {}),
        retries=retries or RetryPolicy(),
    )


@pytest.mark.parametrize(
    ("state", "allow_failure", "ok"),
    [
        (S, False, True),
        (S, True, True),
        (F, False, False),
        (F, True, True),
        (K, True, False),
        (C, True, False),
    ],
)
def test_dep_ok_is_success_or_an_allowed_failure(
    state: TaskState, allow_failure: bool, ok: bool
) -> None:
    assert transitions.dep_ok(state, allow_failure) is ok


@pytest.mark.parametrize(
    ("when", "deps", "decided"),
    [
        (When.SUCCESS, [], TaskState.READY),
        (When.SUCCESS, [(S, False), (S, False)], TaskState.READY),
        (When.SUCCESS, [(S, False), (F, False)], TaskState.SKIPPED),
        (When.SUCCESS, [(S, False), (F, True)], TaskState.READY),
        (When.SUCCESS, [(K, False)], TaskState.SKIPPED),
        (When.SUCCESS, [(C, False)], TaskState.SKIPPED),
        (When.FAILURE, [], TaskState.SKIPPED),
        (When.FAILURE, [(S, False), (F, False)], TaskState.READY),
        (When.FAILURE, [(F, True)], TaskState.READY),  # allowFailure still counts as failed
        (When.FAILURE, [(K, False), (C, False)], TaskState.SKIPPED),
        (When.ALWAYS, [], TaskState.READY),
        (When.ALWAYS, [(F, False), (K, False), (C, False)], TaskState.READY),
    ],
)
def test_decide_runs_or_skips_a_task_by_its_when(
    when: When, deps: list[transitions.DepState], decided: TaskState
) -> None:
    assert transitions.decide(when, deps) is decided
    assert transitions.decide(when, iter(deps)) is decided  # any iterable, read once


def test_retry_delay_follows_the_backoff_until_the_limit() -> None:
    s = spec(retries=RetryPolicy(limit=3, backoff=Backoff(delay=2.0, factor=3.0, max=10.0)))
    delays = [transitions.retry_delay(s, n, Reason.EXIT) for n in (1, 2, 3, 4)]
    assert delays == [2.0, 6.0, 10.0, None]  # capped at max; no 4th retry


def test_retry_delay_retries_exits_and_timeouts_only() -> None:
    s = spec(retries=RetryPolicy(limit=1, backoff=Backoff(delay=1.0)))
    assert transitions.retry_delay(s, 1, Reason.TIMEOUT) == 1.0
    for reason in (Reason.LOST, Reason.CANCELLED, Reason.ERROR):
        assert transitions.retry_delay(s, 1, reason) is None


def test_retry_delay_without_retries_is_none() -> None:
    assert transitions.retry_delay(spec(), 1, Reason.EXIT) is None


def test_counts_as_failure_only_for_failures_not_allowed() -> None:
    assert transitions.counts_as_failure(F, False)
    assert not transitions.counts_as_failure(F, True)
    for state in (S, K, C):
        assert not transitions.counts_as_failure(state, False)


def test_run_outcome() -> None:
    assert transitions.run_outcome([(S, False), (K, False)]) is RunState.SUCCEEDED
    assert transitions.run_outcome([]) is RunState.SUCCEEDED
    assert transitions.run_outcome([(S, False), (F, True)]) is RunState.SUCCEEDED
    assert transitions.run_outcome([(S, False), (F, False)]) is RunState.FAILED
    assert transitions.run_outcome([(C, False)]) is RunState.SUCCEEDED  # cancelled tasks alone
    assert transitions.run_outcome([(F, False)], cancelled=True) is RunState.CANCELLED


def test_output_refs_finds_upstream_tasks_in_every_templated_field() -> None:
    s = spec(
        run='echo "${{ tasks.build.outputs.path }}" ${{run.id}}',
        args=("--x", "${{tasks.fetch[os=linux,arch=arm].outputs.url}}"),
        with_={"n": 1, "deep": {"v": "${{ tasks.a.b.outputs.k }}"}},
        env={"TOKEN": "${{ tasks.auth.outputs.token }}", "PLAIN": "tasks.x.outputs.y"},
    )
    assert transitions.output_refs(s) == {"build", "fetch[os=linux,arch=arm]", "a.b", "auth"}


def test_output_refs_of_a_task_without_templates_is_empty() -> None:
    assert transitions.output_refs(spec(run=None, args=("ls",))) == set()


def test_selector_matches_labels_that_include_every_pair() -> None:
    assert transitions.selector_matches({}, None)
    assert transitions.selector_matches({"gpu": "true"}, {"gpu": "true", "zone": "a"})
    assert not transitions.selector_matches({"gpu": "true"}, {"gpu": "false"})
    assert not transitions.selector_matches({"gpu": "true", "zone": "b"}, {"gpu": "true"})
    assert not transitions.selector_matches({"gpu": "true"}, None)
