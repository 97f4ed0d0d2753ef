"""Large plans are streamed (models.StreamedTasks): the same instances, order and hash as a plan
held whole, without holding them (docs/ARCHITECTURE.md, "Large plans")."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings

from runner import errors, models, planning, workflow
from tests.unit.test_workflow_properties import workflows

HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"


def plan_both(text: str, anchor: str | None = None) -> tuple[models.Plan, models.Plan]:
    """(held, streamed) plans of one file."""
    wf = workflow.loads(text, file="w.yaml")
    held = workflow.plan(wf, anchor=anchor)
    saved = planning.STREAM_ABOVE
    planning.STREAM_ABOVE = 0
    try:
        streamed = workflow.plan(wf, anchor=anchor)
    finally:
        planning.STREAM_ABOVE = saved
    return held, streamed


@settings(max_examples=60, deadline=None)
@given(workflows())
def test_a_streamed_plan_has_the_held_plans_instances_order_and_hash(
    case: tuple[str, dict[str, list[str]], dict[str, int]],
) -> None:
    held, streamed = plan_both(case[0])
    assert isinstance(held.tasks, tuple)
    assert isinstance(streamed.tasks, models.StreamedTasks)
    assert len(streamed.tasks) == len(held.tasks)
    assert list(streamed.tasks) == list(held.tasks)
    assert list(streamed.tasks) == list(streamed.tasks)  # each pass makes the same
    assert streamed.hash == held.hash


LANGUAGE = HEAD + (
    "  params: {who: me}\n"
    "  env: {SHARED: 'a ${{ params.who }}'}\n"
    "  defaults: {retries: 2, workdir: sub}\n"
    "  tasks:\n"
    "    - name: late\n"
    "      run: echo ${{ matrix.x }}\n"
    "      depends: [grid]\n"
    "      matrix: {x: [1, 2]}\n"
    "    - name: grid\n"
    "      args: [echo, '${{ matrix.os }}-${{ matrix.n }}']\n"
    "      env: {N: '${{ matrix.n }}'}\n"
    "      priority: 3\n"
    "      matrix:\n"
    "        os: [linux, mac]\n"
    "        n: [1, 2, 3]\n"
    "        exclude: [{os: mac, n: 2}]\n"
    "    - name: gate\n"
    "      call: tests.callables:noop\n"
    "      if: ${{ params.who == 'me' }}\n"
    "      depends: [late]\n"
    "      workdir: /abs\n"
)


@pytest.mark.parametrize("anchor", [None, "/srv/flows"])
def test_streaming_keeps_templates_excludes_defaults_gates_and_anchoring(
    anchor: str | None,
) -> None:
    held, streamed = plan_both(LANGUAGE, anchor=anchor)
    assert list(streamed.tasks) == list(held.tasks)
    assert streamed.hash == held.hash
    ids = [t.id for t in streamed.tasks]
    assert ids[:5] == [
        f"grid[n={n},os={os}]"
        for os, n in [*((o, n) for o in ("linux", "mac") for n in (1, 2, 3))]
        if (os, n) != ("mac", 2)
    ]
    assert ids[-1] == "gate"
    gate = streamed.tasks[-1]
    assert gate.if_ is not None
    assert gate.depends == ("late[x=1]", "late[x=2]")
    assert gate.workdir == "/abs"
    late = streamed.tasks[5]
    assert late.workdir == ("sub" if anchor is None else "/srv/flows/sub")


def test_an_instance_problem_of_a_streamed_plan_is_raised_when_planning() -> None:
    text = HEAD + (
        "  tasks:\n"
        "    - name: a\n"
        "      run: echo ${{ matrix.y }}\n"
        "      matrix: {x: [1, 2], include: [{x: 1, y: a}]}\n"
    )
    saved = planning.STREAM_ABOVE
    planning.STREAM_ABOVE = 0
    try:
        with pytest.raises(errors.WorkflowInvalid) as info:
            workflow.plan(workflow.loads(text, file="w.yaml"))
    finally:
        planning.STREAM_ABOVE = saved
    assert info.value.message == "w.yaml:7:12: ${{ matrix.y }}: there is no matrix value 'y'"


def big(n: int, extra: str = "") -> str:
    values = ", ".join(str(i) for i in range(n))
    return HEAD + (
        "  tasks:\n"
        "    - name: t\n"
        "      call: tests.callables:noop\n"
        f"      matrix: {{i: [{values}]}}\n{extra}"
    )


def test_a_large_plan_is_streamed_and_not_held() -> None:
    wf = workflow.loads(big(30_000), file="w.yaml")
    tracemalloc.start()
    try:
        plan = workflow.plan(wf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(plan.tasks, models.StreamedTasks)
    assert len(plan.tasks) == 30_000
    # held, 30,000 instances take about 100 MB (a TaskSpec with its dicts is ~3 KB)
    assert peak < 10 * 2**20
    assert plan.tasks[29_999].id == "t[i=29999]"


def test_the_instance_limit_is_higher_for_a_streamable_plan(tmp_path: Path) -> None:
    text = HEAD + ("  tasks:\n    - name: t\n      run: 'true'\n      matrix: {a: [%s], b: [%s]}\n")
    thousand = ", ".join(str(i) for i in range(1000))
    ok = text % (thousand, thousand)
    assert workflow.loads(ok, file="w.yaml").name == "w"  # 1,000,000: checked, not planned
    over = text % (thousand, thousand + ", 1000")
    with pytest.raises(errors.WorkflowInvalid, match="more than 1,000,000 task instances"):
        workflow.loads(over, file="w.yaml")
    cached = ok.replace("run: 'true'", "run: 'true'\n      cache: {key: k}").replace(
        thousand + "]}", ", ".join(str(i) for i in range(101)) + "]}", 1
    )
    with pytest.raises(errors.WorkflowInvalid, match="more than 100,000 task instances") as info:
        workflow.loads(cached, file="w.yaml")
    assert "held in memory whole" in info.value.message
    scheduled = ok.replace("spec:\n", "spec:\n  schedule: '0 * * * *'\n", 1)
    with pytest.raises(errors.WorkflowInvalid, match="more than 100,000 task instances"):
        workflow.loads(scheduled, file="w.yaml")


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ("{i: [%s, '7']}", "axis 'i' has the value '7' more than once"),
        ("{i: [%s], exclude: [{j: 1}]}", None),
    ],
)
def test_a_large_matrix_is_checked_without_expanding_it(matrix: str, message: str | None) -> None:
    values = ", ".join(str(i) for i in range(20_000))
    text = HEAD + f"  tasks:\n    - name: t\n      run: 'true'\n      matrix: {matrix % values}\n"
    if message is None:
        assert workflow.loads(text, file="w.yaml").name == "w"
        return
    with pytest.raises(errors.WorkflowInvalid, match=message):
        workflow.loads(text, file="w.yaml")


def test_a_large_matrix_that_excludes_everything_has_no_instances() -> None:
    values = ", ".join(str(i) for i in range(20_000))
    text = HEAD + (
        f"  tasks:\n    - name: t\n      run: 'true'\n"
        f"      matrix: {{i: [{values}], j: [1], exclude: [{{j: 1}}]}}\n"
    )
    with pytest.raises(errors.WorkflowInvalid, match="expands to no instances"):
        workflow.loads(text, file="w.yaml")


def counted(n: int) -> Iterator[models.TaskSpec]:
    for i in range(n):
        yield models.TaskSpec(id=f"t{i}", name="t", kind=models.Kind.RUN, run="true")


def test_streamed_tasks_behave_as_a_sequence() -> None:
    tasks = models.StreamedTasks(lambda: counted(5), 5)
    assert len(tasks) == 5
    assert tasks[-1].id == "t4"
    assert [t.id for t in tasks[1:3]] == ["t1", "t2"]
    assert tasks == tuple(counted(5))
    assert tasks != tuple(counted(4))
    with pytest.raises(IndexError):
        tasks[5]
    upper = models.map_tasks(
        tasks, lambda t: models.TaskSpec(id=t.id.upper(), name="t", kind=t.kind)
    )
    assert isinstance(upper, models.StreamedTasks)
    assert [t.id for t in upper] == ["T0", "T1", "T2", "T3", "T4"]


def test_the_text_view_of_a_streamed_plan_is_by_task() -> None:
    from runner import planview

    text = big(10_001, "    - {name: join, depends: [t], run: 'true', retries: 2}\n")
    plan = workflow.plan(workflow.loads(text, file="w.yaml"))
    assert isinstance(plan.tasks, models.StreamedTasks)
    assert planview.render_text(plan).splitlines() == [
        f"plan w  hash {plan.hash[:12]}  10,002 task instances of 2 tasks in 2 levels"
        " (shown by task: the plan is streamed)",
        "level 1:",
        "  t ×10,001 (first t[i=0])  priority 0  retries 0  timeout -  needs -",
        "level 2:",
        "  join ×1 (first join)  priority 0  retries 2 (backoff 1s x2)  timeout -  needs t",
    ]
