"""Property tests: random valid workflows plan into DAGs; random mutations never crash."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import dag, errors, planview, workflow


@st.composite
def workflows(draw: st.DrawFn) -> tuple[str, dict[str, list[str]], dict[str, int]]:
    count = draw(st.integers(1, 12))
    names = [f"t{i}" for i in range(count)]
    lines = [
        "apiVersion: runner/v1",
        "kind: Workflow",
        "metadata: {name: prop}",
        "spec:",
        "  tasks:",
    ]
    depends: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        axis = draw(st.integers(0, 3))
        depends[name], sizes[name] = deps, max(axis, 1)
        lines.append(f"    - name: {name}")
        lines.append(f"      run: echo {name}")
        if deps:
            lines.append(f"      depends: [{', '.join(deps)}]")
        if axis:
            lines.append(f"      matrix: {{k: [{', '.join(str(v) for v in range(axis))}]}}")
    return "\n".join(lines) + "\n", depends, sizes


@settings(max_examples=60, deadline=None)
@given(workflows())
def test_random_valid_workflows_plan_into_acyclic_graphs(
    case: tuple[str, dict[str, list[str]], dict[str, int]],
) -> None:
    text, depends, sizes = case
    plan = workflow.plan(workflow.loads(text))
    graph = dag.build(plan.tasks)
    assert dag.is_acyclic(graph)
    for name, size in sizes.items():
        assert len([t for t in plan.tasks if t.name == name]) == size
    by_name = {t.id: t.name for t in plan.tasks}
    edges = {(by_name[a], by_name[b]) for a in graph for b in graph.succ[a]}
    assert edges == {(d, n) for n, ds in depends.items() for d in ds}


def _mutate(text: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["byte", "drop_line", "dup_line", "insert"]))
    lines = text.splitlines(keepends=True)
    if kind == "byte":
        pos = data.draw(st.integers(0, len(text) - 1))
        char = data.draw(st.characters(codec="utf-8"))
        return text[:pos] + char + text[pos + 1 :]
    index = data.draw(st.integers(0, len(lines) - 1))
    if kind == "drop_line":
        return "".join(lines[:index] + lines[index + 1 :])
    if kind == "dup_line":
        return "".join(lines[: index + 1] + lines[index:])
    junk = data.draw(
        st.sampled_from(
            [
                "&a [*a]",
                "*x",
                "!!python/object:os.system x",
                "${{",
                "- [",
                "{",
                "  x: 1",
                "depends: [t0]",
            ]
        )
    )
    return "".join([*lines[:index], f"      {junk}\n", *lines[index:]])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(), st.data())
def test_mutated_files_give_a_clean_error_or_a_plan(
    case: tuple[str, dict[str, list[str]], dict[str, int]], data: st.DataObject
) -> None:
    text = case[0]
    for _ in range(data.draw(st.integers(1, 3))):
        text = _mutate(text, data)
    try:
        plan = workflow.plan(workflow.loads(text, file="m.yaml"))
    except errors.WorkflowInvalid as exc:  # a clean, located error is an allowed outcome
        problems = exc.problems
    else:
        problems = []
        json.dumps(planview.plan_to_json(plan))
    assert all(p.file == "m.yaml" and p.line >= 1 for p in problems)
