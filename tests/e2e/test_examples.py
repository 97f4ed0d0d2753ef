"""Every documented example runs to success with `runner apply` on the embedded store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner import workflow
from tests.e2e.helpers import REPO, Cli

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
UNSCHEDULED = [p for p in EXAMPLES if workflow.load_plan(p).schedule is None]


def test_examples_folder_has_runnable_examples() -> None:
    assert len(UNSCHEDULED) >= 3


@pytest.mark.parametrize("example", UNSCHEDULED, ids=lambda p: p.name)
def test_example_applies_successfully(example: Path, tmp_path: Path) -> None:
    # the whole folder: examples read files beside them (cache.files, include)
    shutil.copytree(example.parent, tmp_path, dirs_exist_ok=True)
    cli = Cli(tmp_path)
    res = cli.run("apply", example.name, "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    run = cli.get_run(res.stdout.split()[1])  # "run ID created" (a sub-run is created later)
    assert run["state"] == "succeeded"
    plan = workflow.load_plan(example)
    assert run["tasks_done"] == run["tasks_total"]
    assert {t["id"] for t in run["tasks"]} >= {t.id for t in plan.tasks}
    if not any(t.for_each for t in plan.tasks):  # forEach adds instances at run time
        assert run["tasks_total"] == len(plan.tasks)


def test_the_include_example_runs_on_both_stores(any_store_cli: Cli, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path, dirs_exist_ok=True)
    res = any_store_cli.run("apply", "include.yaml", "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    run = any_store_cli.get_run()
    assert sorted(t["id"] for t in run["tasks"]) == ["build", "lint", "release", "test"]
    assert all(t["state"] == "succeeded" for t in run["tasks"])
    res = any_store_cli.run("validate", "include.yaml")
    assert res.returncode == 0, res.stderr
    (tmp_path / "common" / "lint.yaml").write_text("tasks:\n  - name: lint\n    runn: x\n")
    res = any_store_cli.run("validate", "include.yaml")
    assert res.returncode == 2
    assert "common/lint.yaml:3:5: tasks.lint: unknown key 'runn'; did you mean 'run'?" in res.stderr
