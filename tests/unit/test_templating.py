"""Templates: references, plan-time and run-time rendering, shell quoting, matrix expansion."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner import errors, models, planning, templating, workflow

EVIL = "$(echo INJECTED); `echo TICK` \"dq\" 'sq' \\ ${HOME} ${{ run.id }}\n; echo pwned #"


def _final(run: str, *, params: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    planned = templating.render(run, params=params, matrix={}, quote=True)
    spec = models.TaskSpec(id="t", name="t", kind=models.Kind.RUN, run=planned)
    rendered = templating.render_runtime(spec, models.RunContext(run_id="R1", outputs=outputs))
    assert rendered.run is not None
    return rendered.run


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("printf %s ${{ params.p }}", EVIL),
        ('printf %s "${{ params.p }}"', EVIL),
        ("printf %s '${{ params.p }}'", EVIL),
        ('printf %s "a$(printf %s ${{ params.p }})b"', f"a{EVIL}b"),
        ('printf %s "x${{ params.p }}${{ run.id }}"', f"x{EVIL}R1"),
        ("printf %s ${{ tasks.a.outputs.o }}", EVIL),
        ('printf %s "${{ tasks.a.outputs.o }}"', EVIL),
    ],
)
def test_hostile_value_stays_inert_when_run_by_sh(script: str, expected: str) -> None:
    final = _final(script, params={"p": EVIL}, outputs={"a": {"o": EVIL}})
    result = subprocess.run(["/bin/sh", "-c", final], capture_output=True, text=True, check=True)
    assert result.stdout == expected
    assert "INJECTED" not in result.stdout.replace(EVIL, "")


def test_template_in_heredoc_is_refused() -> None:
    assert templating.shell_problems("cat <<EOF\n${{ params.p }}\nEOF") != []
    with pytest.raises(templating.TemplateError, match="here-document"):
        templating.render(
            "cat <<EOF\n${{ params.p }}\nEOF", params={"p": "x"}, matrix={}, quote=True
        )


def test_substituted_value_is_never_a_template_at_run_time() -> None:
    planned = templating.render(
        "${{ params.p }}", params={"p": "${{ run.id }}"}, matrix={}, quote=False
    )
    assert planned == "${{ '${{' }} run.id }}"
    spec = models.TaskSpec(id="t", name="t", kind=models.Kind.ARGS, args=(planned,))
    out = templating.render_runtime(spec, models.RunContext(run_id="R1"))
    assert out.args == ("${{ run.id }}",)


@given(st.text())
def test_escape_round_trips_any_value(value: str) -> None:
    planned = templating.render("<${{ params.p }}>", params={"p": value}, matrix={}, quote=False)
    spec = models.TaskSpec(id="t", name="t", kind=models.Kind.ARGS, args=(planned,))
    out = templating.render_runtime(spec, models.RunContext(run_id="R"))
    assert out.args == (f"<{value}>",)


def test_args_element_stays_one_argument() -> None:
    planned = templating.render(
        "--x=${{ params.p }}", params={"p": "a b; c"}, matrix={}, quote=False
    )
    assert planned == "--x=a b; c"


def test_runtime_fills_run_fields_and_missing_output_is_empty() -> None:
    spec = models.TaskSpec(
        id="t",
        name="t",
        kind=models.Kind.CALL,
        call="m:f",
        with_={"n": "${{ tasks.up.outputs.rows }}", "when": "${{ run.scheduled_time }}"},
        env={"ID": "${{ run.id }}", "MISSING": "${{ tasks.up.outputs.none }}"},
    )
    ctx = models.RunContext(
        run_id="R9", scheduled_time=1767232800.0, outputs={"up": {"rows": "42"}}
    )
    out = templating.render_runtime(spec, ctx)
    assert out.with_ == {"n": "42", "when": "2026-01-01T02:00:00Z"}
    assert out.env == {"ID": "R9", "MISSING": ""}
    none = templating.render_runtime(
        models.TaskSpec(
            id="t", name="t", kind=models.Kind.RUN, run="echo ${{ run.scheduled_time }}"
        ),
        models.RunContext(run_id="R"),
    )
    assert none.run == "echo ''"


def test_with_value_that_is_one_template_keeps_its_type() -> None:
    value = templating.render_value(
        {"n": "${{ params.n }}", "s": "n=${{ params.n }}"}, params={"n": 5}, matrix={}
    )
    assert value == {"n": 5, "s": "n=5"}


@pytest.mark.parametrize(
    "text",
    ["${{ env.HOME }}", "${{ params.a + 1 }}", "${{ tasks.a.b }}", "${{ run.other }}", "${{ x"],
)
def test_only_dotted_references_are_accepted(text: str) -> None:
    refs, problems = templating.references(text)
    assert refs == []
    assert len(problems) == 1


def test_matrix_include_exclude_like_github() -> None:
    combos = planning.expand_matrix(
        {
            "os": ["a", "b"],
            "v": [1, 2],
            "exclude": [{"os": "a", "v": 2}],
            "include": [{"os": "b", "extra": "x"}, {"os": "c", "v": 9}],
        }
    )
    assert combos == [
        {"os": "a", "v": 1},
        {"os": "b", "v": 1, "extra": "x"},
        {"os": "b", "v": 2, "extra": "x"},
        {"os": "c", "v": 9},
    ]
    assert planning.instance_id("t", {"v": 1, "os": "a"}) == "t[os=a,v=1]"
    assert planning.instance_id("t", {}) == "t"


_PARAM_DOC = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: inert}
spec:
  params: {x: "", y: "from-y"}
  tasks:
    - name: up
      args: [echo]
    - name: t
      depends: [up]
      matrix: {m: ["${{ run.id }}"]}
      env: {X: "${{ params.x }}", M: "${{ matrix.m }}", O: "${{ tasks.up.outputs.o }}"}
      args: [echo, "${{ params.x }}", "${{ matrix.m }}"]
"""


@pytest.mark.parametrize(
    "value", ["${{ params.y }}", "${{ run.id }}", "${{ bogus }}", "${{ tasks.up.outputs.o }}"]
)
def test_param_matrix_and_output_values_are_inert_everywhere(value: str) -> None:
    plan = workflow.plan(workflow.loads(_PARAM_DOC), params={"x": value})
    spec = next(s for s in plan.tasks if s.name == "t")
    ctx = models.RunContext(run_id="R1", params=dict(plan.params), outputs={"up": {"o": value}})
    out = templating.render_runtime(spec, ctx)
    assert out.env["RUNNER_PARAM_X"] == value
    assert out.env["X"] == value
    assert out.env["O"] == value
    assert out.env["M"] == "${{ run.id }}"
    assert out.args == ("echo", value, "${{ run.id }}")


def test_runtime_text_that_is_no_reference_stays_text() -> None:
    spec = models.TaskSpec(id="t", name="t", kind=models.Kind.ARGS, args=("${{ bogus }}",))
    assert templating.render_runtime(spec, models.RunContext(run_id="R")).args == ("${{ bogus }}",)


_HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: n}\nspec:\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('  tasks:\n    - name: t\n      args: [echo]\n      matrix: {m: ["a\\0b"]}\n', (8, 20)),
        ('  tasks:\n    - name: t\n      args: [echo, "a\\0"]\n', (7, 20)),
        ('  params: {p: "a\\0"}\n  tasks:\n    - name: t\n      args: [echo]\n', (5, 15)),
    ],
)
def test_nul_byte_in_a_file_is_refused_with_its_position(body: str, where: tuple[int, int]) -> None:
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.loads(_HEAD + body, file="w.yaml")
    assert [(p.line, p.col) for p in info.value.problems if "NUL" in p.message] == [where]


def test_nul_byte_in_a_param_is_refused_naming_it(tmp_path: Path) -> None:
    wf = workflow.loads(_HEAD + "  params: {p: x}\n  tasks:\n    - {name: t, args: [echo]}\n")
    with pytest.raises(
        errors.WorkflowInvalid, match=r"--param p=\.\.\.: a NUL byte cannot reach a task"
    ):
        workflow.plan(wf, params={"p": "a\0b"})
    values = tmp_path / "values.yaml"
    values.write_text('p: "a\\0"\n')
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.plan(wf, params_file=str(values))
    assert [str(p) for p in info.value.problems] == [
        f"{values}:1:4: a NUL byte (\\0) cannot be passed to a task; remove it"
    ]
