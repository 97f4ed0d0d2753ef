"""Plan-time checks and planning of if:, forEach and spec.aging (runner.workflow)."""

from __future__ import annotations

import pytest

from runner import errors, foreach, models, planview, workflow

HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
GOOD = (
    HEAD
    + """\
  params: {env: dev}
  limits: {forEach: 50}
  aging: {every: 1m, by: 2}
  tasks:
    - name: list
      run: echo hi
    - name: each
      depends: [list]
      forEach: ${{ tasks.list.outputs.items }}
      run: echo ${{ item.id }}
    - name: gated
      depends: [each]
      if: ${{ params.env == 'prod' and tasks.list.outputs.changed == 'true' }}
      run: echo ${{ run.id }}
"""
)


def problems(text: str) -> list[str]:
    with pytest.raises(errors.WorkflowInvalid) as caught:
        workflow.loads(text, file="w.yaml")
    return [str(p) for p in caught.value.problems]


def test_plan_carries_conditions_for_each_and_aging() -> None:
    plan = workflow.plan(workflow.loads(GOOD, file="w.yaml"))
    each, gated = plan.task("each"), plan.task("gated")
    assert each.for_each == models.ForEach(task="list", output="items", limit=50)
    assert each.run == "echo ${{ item.id }}"  # filled when the store expands it
    assert gated.if_ == "${{ params.env == 'prod' and tasks.list.outputs.changed == 'true' }}"
    assert plan.aging == models.Aging(every=60.0, by=2)
    assert planview.plan_from_json(planview.plan_to_json(plan)) == plan


def test_plan_shows_the_dynamic_task() -> None:
    text = planview.render_text(workflow.plan(workflow.loads(GOOD, file="w.yaml")))
    assert "each[*] \N{LEFTWARDS ARROW} tasks.list.outputs.items" in text
    assert "aging +2 priority every 1m" in text


def test_plans_without_the_new_fields_keep_their_hash() -> None:
    text = HEAD + "  tasks:\n    - name: a\n      run: echo\n"
    spec = workflow.plan(workflow.loads(text)).tasks[0].to_dict()
    assert not {"if", "forEach", "item"} & spec.keys()
    assert "aging" not in planview.plan_to_json(workflow.plan(workflow.loads(text)))


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (  # unknown param, at its column inside the expression
            "    - name: a\n      if: ${{ params.envv == 'prod' }}\n      run: echo\n",
            "w.yaml:8:15: if: params.envv: unknown param 'envv' (did you mean 'env'?)",
        ),
        (
            "    - name: a\n      if: ${{ params.env == 'prod' and bogus.x }}\n      run: echo\n",
            "w.yaml:8:40: if: unknown name 'bogus.x'",
        ),
        (
            "    - name: a\n      if: ${{ params.env == }}\n      run: echo\n",
            "w.yaml:8:29: if: expected a value, a name or '(' but found the end",
        ),
        (
            "    - name: a\n      run: echo\n    - name: b\n"
            "      if: ${{ tasks.a.outputs.x == '1' }}\n      run: echo\n",
            "w.yaml:10:15: if: tasks.a.outputs.x: task 'a' is not upstream of this task",
        ),
        (
            "    - name: a\n      run: echo\n    - name: b\n"
            "      forEach: ${{ tasks.a.outputs.items }}\n      run: echo\n",
            "w.yaml:10:20: forEach: ${{ tasks.a.outputs.items }}: task 'a' is not upstream",
        ),
        (
            "    - name: a\n      forEach: ${{ params.env }}\n      run: echo\n",
            "w.yaml:8:20: forEach takes one ${{ tasks.NAME.outputs.KEY }} of an upstream task",
        ),
        (
            "    - name: a\n      run: echo ${{ item }}\n",
            "w.yaml:8:12: ${{ item }}: item is defined only in a task with forEach",
        ),
        (
            "    - name: a\n      if: ${{ item.x == '1' }}\n      run: echo\n",
            "w.yaml:8:15: if: item.x: item is defined only in a task with forEach",
        ),
    ],
)
def test_problems_point_into_the_expression(tasks: str, expected: str) -> None:
    found = problems(HEAD + "  params: {env: dev}\n  tasks:\n" + tasks)
    assert any(p.startswith(expected) for p in found), found


def test_for_each_and_matrix_do_not_mix() -> None:
    text = HEAD + (
        "  tasks:\n    - name: a\n      run: echo\n    - name: b\n      depends: [a]\n"
        "      matrix: {x: [1, 2]}\n      forEach: ${{ tasks.a.outputs.items }}\n      run: echo\n"
    )
    assert "w.yaml:11:16: a task cannot have both forEach and matrix" in problems(text)[0]


def test_aging_needs_a_duration() -> None:
    text = HEAD + "  aging: {every: soon}\n  tasks:\n    - name: a\n      run: echo\n"
    assert "aging.every" in problems(text)[0]


def test_instances_fill_item_per_field_and_quote_it_in_run() -> None:
    text = GOOD.replace("run: echo ${{ item.id }}", "run: echo ${{ item.id }} ${{ item }}")
    each = workflow.plan(workflow.loads(text, file="w.yaml")).task("each")
    items = [{"id": "a b"}, {"id": 2, "x": [1]}, "plain"]
    got = foreach.instances(each, items)
    assert [t["id"] for t in got] == ["each[i=0]", "each[i=1]", "each[i=2]"]
    assert [t["run"] for t in got] == [
        "echo 'a b' '{\"id\":\"a b\"}'",
        'echo 2 \'{"id":2,"x":[1]}\'',
        "echo '' plain",
    ]
    assert [t["item"] for t in got] == items
    assert all("forEach" not in t and t["depends"] == ["list"] for t in got)
    assert {t["when"] for t in got} == {"always"}
    assert models.TaskSpec.from_dict(got[1]).matrix == {"i": 1}


def test_dot_and_mermaid_draw_the_dynamic_task() -> None:
    plan = workflow.plan(workflow.loads(GOOD, file="w.yaml"))
    assert "each[*] \N{LEFTWARDS ARROW} tasks.list.outputs.items" in planview.render_dot(plan)
    assert "each[*] \N{LEFTWARDS ARROW} tasks.list.outputs.items" in planview.render_mermaid(plan)
