"""Loading, checking and planning workflow files (runner.workflow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import errors, models, workflow

ROOT = Path(__file__).resolve().parents[2]
BAD = Path(__file__).parent / "fixtures" / "bad"
HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"

EXPECTED = {
    "bad_cron.yaml": [
        "5:13: invalid cron schedule '61 * * * *'",
        "6:13: unknown time zone 'Mars/Olympus'",
    ],
    "bad_duration.yaml": ["7:16: tasks.a.timeout: '5 minutes' is not valid; use a duration"],
    "bad_expression.yaml": ["7:12: unsupported reference ${{ env.HOME }}; use"],
    "cycle.yaml": ["7:16: dependency cycle: a -> c -> b -> a (-> = depends on)"],
    "duplicate_instance.yaml": ["7:15: the matrix expands to 'a[x=1]' more than once"],
    "duplicate_key.yaml": ["8:7: duplicate key 'run' (first defined on line 7)"],
    "duplicate_name.yaml": ["8:13: duplicate task name 'a' (first used on line 6)"],
    "matrix_outputs.yaml": ["11:12: ${{ tasks.a.outputs.k }}: task 'a' has a matrix"],
    "negative_retries.yaml": ["7:16: tasks.a.retries: -1 is less than the minimum of 0"],
    "not_upstream.yaml": ["7:12: ${{ tasks.b.outputs.x }}: task 'b' is not upstream"],
    "python_tag.yaml": ["7:12: tag tag:yaml.org,2002:python/object/apply:os.system is not"],
    "self_dep.yaml": ["7:17: task 'a' depends on itself"],
    "two_kinds.yaml": ["6:7: tasks.a: a task has exactly one of run, args or call, found run"],
    "unknown_dep.yaml": ["9:17: tasks.b: unknown dependency 'lod'; did you mean 'load'?"],
    "unknown_key.yaml": ["8:7: tasks.a: unknown key 'dependson'; did you mean 'depends'?"],
    "unknown_param_ref.yaml": ["7:12: ${{ params.nope }}: unknown param 'nope'; declare it"],
}


def test_every_bad_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_fixture_reports_file_line_col_and_message(name: str) -> None:
    path = BAD / name
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.load_plan(path)
    lines = info.value.message.splitlines()
    assert len(lines) == len(EXPECTED[name])
    for line, expected in zip(lines, EXPECTED[name], strict=True):
        assert line.startswith(f"{path}:{expected}")
    assert info.value.exit_code == 2


def test_cycle_raises_cycle_detected_with_path() -> None:
    with pytest.raises(errors.CycleDetected) as info:
        workflow.load(BAD / "cycle.yaml")
    assert info.value.cycle == ["a", "c", "b", "a"]


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = HEAD + (
        "  tasks:\n"
        "    - {name: a, run: x, depends: [zz]}\n"
        "    - {name: a, run: y}\n"
        "    - {name: b, run: '${{ params.p }}'}\n"
    )
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.loads(text, file="w.yaml")
    assert [(p.line, p.col) for p in info.value.problems] == [(6, 35), (7, 14), (8, 22)]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=str)
def test_example_files_plan(path: Path) -> None:
    plan = workflow.load_plan(path)
    assert plan.tasks
    assert plan.hash


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").glob("*.yaml")), ids=str)
def test_deployed_workflow_files_plan_with_a_schedule(path: Path) -> None:
    plan = workflow.load_plan(path)
    assert plan.schedule is not None


def test_etl_example_expands_matrix_defaults_and_dependencies() -> None:
    plan = workflow.load_plan(ROOT / "examples" / "etl.yaml", params={"date": "2026-03-01"})
    extract = plan.task("extract[shard=2]")
    assert extract.priority == 5
    assert extract.retries == models.RetryPolicy(
        limit=3, backoff=models.Backoff(delay=2.0, factor=2.0, max=60.0)
    )
    assert extract.timeout == 300.0
    assert extract.run == 'echo "extract shard 2 for 2026-03-01"'
    load = plan.task("load")
    assert load.depends == tuple(f"extract[shard={i}]" for i in range(4))
    assert load.retries.limit == 2
    assert load.timeout == 600.0
    assert load.run is not None
    assert 'echo "rows=4000" >> "$RUNNER_OUTPUT"' in load.run
    assert load.env["TARGET"] == "warehouse"
    assert load.env["LOG_LEVEL"] == "info"
    assert load.env["RUNNER_PARAM_DATE"] == "2026-03-01"
    assert plan.task("notify").when is models.When.ALWAYS
    assert plan.schedule == models.Schedule(
        cron="0 3 * * *",
        timezone="Europe/Berlin",
        concurrency_policy=models.ConcurrencyPolicy.FORBID,
        starting_deadline=300.0,
    )
    assert [t.id for t in plan.tasks][-3:] == ["load", "report", "notify"]


def test_plan_hash_is_stable_and_independent_of_path(tmp_path: Path) -> None:
    src = ROOT / "examples" / "etl.yaml"
    copy = tmp_path / "elsewhere.yaml"
    copy.write_text(src.read_text())
    assert workflow.load_plan(src).hash == workflow.load_plan(copy).hash
    changed = workflow.load_plan(copy, params={"date": "2030-01-01"})
    assert changed.hash != workflow.load_plan(src).hash


def test_param_precedence_file_then_flag(tmp_path: Path) -> None:
    pf = tmp_path / "p.yaml"
    pf.write_text("date: '2026-05-05'\n")
    wf = workflow.load(ROOT / "examples" / "etl.yaml")
    assert workflow.plan(wf, params_file=str(pf)).params["date"] == "2026-05-05"
    both = workflow.plan(wf, params_file=str(pf), params={"date": "2026-06-06"})
    assert both.params["date"] == "2026-06-06"


def test_unknown_param_names_the_argument_and_suggests(tmp_path: Path) -> None:
    wf = workflow.load(ROOT / "examples" / "etl.yaml")
    with pytest.raises(errors.WorkflowInvalid, match=r"--param dat: .*did you mean 'date'"):
        workflow.plan(wf, params={"dat": "x"})
    pf = tmp_path / "p.yaml"
    pf.write_text("dte: x\n")
    with pytest.raises(errors.WorkflowInvalid, match=r"p.yaml:1:1: unknown param 'dte'"):
        workflow.plan(wf, params_file=str(pf))


def test_defaults_are_overridden_by_task_fields() -> None:
    text = HEAD + (
        "  priority: 3\n"
        "  defaults: {retries: 4, timeout: 1h30m, shell: bash -euc, when: always}\n"
        "  tasks:\n"
        "    - {name: a, run: x}\n"
        "    - {name: b, run: x, retries: 0, priority: 9, timeout: 500ms, shell: [zsh, -c]}\n"
    )
    plan = workflow.plan(workflow.loads(text))
    a, b = plan.task("a"), plan.task("b")
    assert (a.retries.limit, a.timeout, a.priority, a.shell) == (4, 5400.0, 3, ("bash", "-euc"))
    assert (b.retries.limit, b.timeout, b.priority, b.shell) == (0, 0.5, 9, ("zsh", "-c"))
    assert a.when is b.when is models.When.ALWAYS


def test_depending_on_a_matrix_task_waits_for_every_instance() -> None:
    plan = workflow.load_plan(ROOT / "examples" / "matrix.yaml")
    report = plan.task("report")
    builds = [t.id for t in plan.tasks if t.name == "build"]
    assert report.depends == tuple(builds)
    assert len(builds) == 4
    assert "build[experimental=true,os=debian,python=3.13]" in builds


def test_unreadable_and_oversized_files_are_clean_problems(tmp_path: Path) -> None:
    with pytest.raises(errors.WorkflowInvalid, match=r"missing.yaml: no such file; check the path"):
        workflow.load(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (11 * 1024 * 1024))
    with pytest.raises(errors.WorkflowInvalid, match=r"big.yaml:1:1: the file is 11,534,336 bytes"):
        workflow.load(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: \xe9\n")
    with pytest.raises(errors.WorkflowInvalid, match=r"latin.yaml:2:4: the file is not UTF-8"):
        workflow.load(latin)


PINNED = (
    "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w, labels: {team: data}}\nspec:\n"
    "  params: {date: '2026-01-01', n: 3}\n  env: {A: '${{ params.date }}'}\n"
    "  defaults: {retries: 2, timeout: 10m, shell: bash -euc}\n  schedule: '0 2 * * *'\n"
    "  tasks:\n"
    "    - {name: a, run: 'echo ${{ matrix.k }}', matrix: {k: [1, x]}, priority: 5}\n"
    "    - name: b\n      depends: [a]\n      args: [x, '${{ params.n }}']\n"
    "      retries: {limit: 3, backoff: {delay: 2s, factor: 2, max: 1m}}\n"
    "    - {name: c, depends: [b], call: 'm:f', with: {n: '${{ params.n }}'}, when: always}\n"
)


def test_plan_hash_does_not_change_between_versions() -> None:
    # stored schedules compare hashes to tell whether a re-apply changed anything
    plan = workflow.plan(workflow.loads(PINNED))
    assert plan.hash == "e310cf279b8d2e0fdb5bfb068ad4a0f76e3057c87a488f54e5269febc3f739c4"
    assert workflow.plan_hash(plan) == plan.hash


def test_planning_errors_keep_their_order_per_instance() -> None:
    text = HEAD + (
        '  params: {p: a}\n  defaults: {shell: "bash \'oops"}\n  tasks:\n'
        "    - {name: a, run: 'echo ${{ matrix.k }}', matrix: {k: [1, 2]}}\n"
    )
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.plan(workflow.loads(text, file="w.yaml"))
    assert (
        info.value.message.splitlines()
        == ["w.yaml:6:21: cannot split the shell command line: No closing quotation"] * 2
    )


def test_a_retry_count_written_as_a_float_plans() -> None:
    text = HEAD + "  tasks:\n    - {name: a, run: x, retries: 2.0}\n"
    assert workflow.plan(workflow.loads(text)).tasks[0].retries.limit == 2


def test_a_huge_name_is_clipped_in_every_message() -> None:
    name = "a" * 5000
    text = (
        f"apiVersion: runner/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n"
        f"  params: {{p: 1}}\n  tasks:\n    - {{name: {name}, args: [echo]}}\n"
    )
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.loads(text)
    assert info.value.problems
    assert all(len(str(p)) < 400 for p in info.value.problems)
    ok = workflow.loads(text.replace(name, "ok"))
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.plan(ok, params={name: "1"})
    assert all(len(str(p)) < 400 for p in info.value.problems)
    for error in (errors.RunNotFound(name), errors.TaskNotFound(name, name)):
        assert len(str(error)) < 400
