"""forEach, if: and spec.aging through the real CLI, on both stores (docs/WORKFLOW.md)."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.helpers import REPO, Cli, tasks_by_id

HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: lang}\nspec:\n"
FAN = (
    HEAD
    + """\
  limits: {forEach: LIMIT}
  tasks:
    - name: list
      run: |
        python3 -c 'import json; print("items=" + json.dumps([{"n": i} for i in range(40)]))' \\
          >> "$RUNNER_OUTPUT"
    - name: each
      depends: [list]
      forEach: ${{ tasks.list.outputs.items }}
      run: echo ${{ item.n }} >> seen.txt
    - name: summary
      depends: [each]
      run: wc -l < seen.txt > summary.txt
"""
)


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


def test_for_each_runs_one_instance_per_item_then_the_join(cli: Cli) -> None:
    (cli.cwd / "fan.yaml").write_text(FAN.replace("LIMIT", "100"))
    plan = cli.run("plan", "fan.yaml")
    assert "each[*] \N{LEFTWARDS ARROW} tasks.list.outputs.items" in plan.stdout
    res = cli.run("apply", "fan.yaml", "--workers", "3", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(int(x) for x in (cli.cwd / "seen.txt").read_text().split()) == list(range(40))
    assert (cli.cwd / "summary.txt").read_text().strip() == "40"  # after every instance
    run = cli.get_run()
    tasks = tasks_by_id(run)
    assert {f"each[i={i}]" for i in range(40)} <= tasks.keys()
    assert (run["tasks_total"], tasks["each"]["state"]) == (43, "succeeded")


def test_for_each_over_its_limit_fails_with_the_reason(cli: Cli) -> None:
    (cli.cwd / "fan.yaml").write_text(FAN.replace("LIMIT", "10"))
    res = cli.run("apply", "fan.yaml", "--workers", "1", timeout=120)
    assert res.returncode == 1
    each = tasks_by_id(cli.get_run())["each"]
    assert each["state"] == "failed"
    assert "has 40 items, more than the limit of 10" in each["waiting_reason"]
    shown = cli.run("get", "run", "@latest")
    assert "more than the limit of 10" in shown.stdout


@pytest.mark.parametrize(("env", "deployed"), [("dev", False), ("prod", True)])
def test_a_condition_decides_whether_the_task_runs(cli: Cli, env: str, deployed: bool) -> None:
    shutil.copy(REPO / "examples" / "conditions.yaml", cli.cwd / "conditions.yaml")
    res = cli.run("apply", "conditions.yaml", "--param", f"env={env}", "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    tasks = tasks_by_id(cli.get_run())
    assert tasks["report"]["state"] == "succeeded"
    if deployed:
        assert (tasks["deploy"]["state"], tasks["announce"]["state"]) == ("succeeded",) * 2
        return
    assert (tasks["deploy"]["state"], tasks["announce"]["state"]) == ("skipped", "skipped")
    assert tasks["deploy"]["waiting_reason"].startswith("skipped: if ${{ params.env == 'prod'")
    assert not tasks["deploy"]["attempts"]
    assert "skipped: if" in cli.run("get", "run", "@latest").stdout


def test_an_unknown_name_in_a_condition_is_refused_at_its_position(cli: Cli) -> None:
    (cli.cwd / "bad.yaml").write_text(
        HEAD + "  tasks:\n    - name: a\n      if: ${{ params.nope == 'x' }}\n      run: echo\n"
    )
    res = cli.run("apply", "bad.yaml")
    assert res.returncode == 2
    assert "bad.yaml:7:15: if: params.nope: unknown param 'nope'" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_aging_workflow_runs_and_its_plan_says_so(cli: Cli) -> None:
    shutil.copy(REPO / "examples" / "aging.yaml", cli.cwd / "aging.yaml")
    assert "aging +1 priority every 1m" in cli.run("plan", "aging.yaml").stdout
    res = cli.run("apply", "aging.yaml", "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
