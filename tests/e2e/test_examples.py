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
    run = cli.get_run()
    assert run["state"] == "succeeded"
    assert run["tasks_done"] == run["tasks_total"] == len(workflow.load_plan(example).tasks)
