"""`spec.concurrency` in plans: the group rendered from params, kept through the plan's JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import errors, planview, workflow
from runner.models import Concurrency

BASE = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
TASKS = "  tasks:\n    - name: a\n      run: 'true'\n"


def _write(tmp_path: Path, spec: str) -> str:
    path = tmp_path / "w.yaml"
    path.write_text(BASE + spec + TASKS)
    return str(path)


def test_group_is_rendered_from_params_and_round_trips(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "  params: {env: dev}\n  concurrency: {group: 'deploy-${{ params.env }}', "
        "cancelInProgress: true}\n",
    )
    plan = workflow.load_plan(path, params={"env": "prod"})
    assert plan.concurrency == Concurrency(group="deploy-prod", cancel_in_progress=True)
    assert planview.plan_from_json(planview.plan_to_json(plan)) == plan
    assert workflow.load_plan(path).hash != plan.hash


def test_plans_without_concurrency_keep_their_hash(tmp_path: Path) -> None:
    plan = workflow.load_plan(_write(tmp_path, ""))
    assert plan.concurrency is None
    assert "concurrency" not in planview.plan_to_json(plan)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("'d-${{ params.nope }}'", "there is no params value 'nope'"),
        ("'d-${{ run.id }}'", "only params can be used here"),
    ],
)
def test_group_problems_are_located(tmp_path: Path, group: str, message: str) -> None:
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.load_plan(_write(tmp_path, f"  concurrency: {{group: {group}}}\n"))
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (5, "spec.concurrency.group")
    assert message in problem.message


def test_concurrency_needs_a_group(tmp_path: Path) -> None:
    with pytest.raises(errors.WorkflowInvalid, match="missing required key 'group'"):
        workflow.load_plan(_write(tmp_path, "  concurrency: {cancelInProgress: true}\n"))
