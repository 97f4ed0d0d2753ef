"""`include:`: tasks and defaults merged from other files, problems located in the file at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import errors, workflow

MAIN = """\
apiVersion: runner/v1
kind: Workflow
include: [./common/build.yaml]
metadata: {name: inc}
spec:
  params: {v: "1"}
  defaults: {timeout: 5m}
  tasks:
    - name: deploy
      depends: [test]
      run: echo deploy ${{ params.v }}
"""

BUILD = """\
defaults: {retries: 2, timeout: 1m}
include: [./lint.yaml]
tasks:
  - name: build
    run: echo build ${{ params.v }}
  - name: test
    depends: [build, lint]
    run: echo test
"""

LINT = """\
tasks:
  - name: lint
    run: echo lint
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "common").mkdir()
    (tmp_path / "w.yaml").write_text(MAIN)
    (tmp_path / "common" / "build.yaml").write_text(BUILD)
    (tmp_path / "common" / "lint.yaml").write_text(LINT)
    return tmp_path


def _problems(path: Path) -> list[str]:
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.load_plan(path)
    return [f"{p.file}:{p.line}:{p.col}: {p.message}" for p in info.value.problems]


def test_tasks_and_defaults_merge_with_the_including_file_winning(files: Path) -> None:
    plan = workflow.load_plan(files / "w.yaml")
    assert [t.id for t in plan.tasks] == ["build", "lint", "test", "deploy"]
    assert {t.timeout for t in plan.tasks} == {300.0}  # own default wins over the include's
    assert {t.retries.limit for t in plan.tasks} == {2}  # the include's default applies
    assert plan.task("build").run == "echo build 1"  # the workflow's params
    assert plan.task("test").depends == ("build", "lint")


def test_plan_hash_covers_included_files(files: Path) -> None:
    before = workflow.load_plan(files / "w.yaml").hash
    (files / "common" / "lint.yaml").write_text(LINT.replace("echo lint", "echo lint2"))
    assert workflow.load_plan(files / "w.yaml").hash != before


def test_a_semantic_problem_points_into_the_included_file(files: Path) -> None:
    (files / "common" / "build.yaml").write_text(BUILD.replace("[build, lint]", "[build, lnt]"))
    (msg,) = _problems(files / "w.yaml")
    assert msg.startswith(f"{files}/common/build.yaml:7:22: ")
    assert "unknown dependency 'lnt'; did you mean 'lint'?" in msg


def test_a_schema_problem_points_into_the_included_file(files: Path) -> None:
    (files / "common" / "lint.yaml").write_text(LINT + "    retries: many\n")
    (msg,) = _problems(files / "w.yaml")
    assert msg.startswith(f"{files}/common/lint.yaml:4:14: ")


def test_unknown_top_level_key_of_an_included_file(files: Path) -> None:
    (files / "common" / "lint.yaml").write_text("task:\n  - {name: a, run: x}\n")
    (msg,) = _problems(files / "w.yaml")
    assert msg.startswith(f"{files}/common/lint.yaml:1:1: unknown key 'task'")


def test_a_cycle_is_an_error_naming_the_chain(files: Path) -> None:
    (files / "common" / "lint.yaml").write_text(LINT + "include: [../w.yaml]\n")
    (msg,) = _problems(files / "w.yaml")
    assert msg.startswith(f"{files}/common/lint.yaml:4:11: include cycle: ")
    assert msg.endswith("cycle: w.yaml -> common/build.yaml -> common/lint.yaml -> w.yaml")


def test_a_missing_file_is_an_error_at_the_include_entry(files: Path) -> None:
    (files / "common" / "build.yaml").write_text(BUILD.replace("./lint.yaml", "./nope.yaml"))
    (msg,) = _problems(files / "w.yaml")
    assert msg.startswith(f"{files}/common/build.yaml:2:11: cannot include './nope.yaml'")


def test_duplicate_task_names_across_files(files: Path) -> None:
    (files / "common" / "lint.yaml").write_text(LINT.replace("name: lint", "name: deploy"))
    problems = _problems(files / "w.yaml")
    assert any(
        p.startswith(f"{files}/common/lint.yaml:2:11: duplicate task name 'deploy'")
        for p in problems
    )


def test_without_include_the_document_is_unchanged(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(MAIN.replace("include: [./common/build.yaml]\n", ""))
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.load(tmp_path / "w.yaml")
    assert "unknown dependency 'test'" in info.value.problems[0].message
