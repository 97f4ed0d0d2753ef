"""Sub-runs (`workflow:` tasks) through the real CLI on both stores: the child run's end decides
the task's, and cancelling the parent cancels the child."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.e2e.helpers import WORKFLOWS, Cli, tasks_by_id, wait_for


def _copy(cli: Cli) -> None:
    for name in ("parent.yaml", "child.yaml"):
        shutil.copy(WORKFLOWS / "sub" / name, cli.cwd / name)


def _apply(cli: Cli, *args: str) -> tuple[int, str]:
    res = cli.run("apply", "parent.yaml", "--workers", "2", *args)
    return res.returncode, res.stdout.split()[1]  # "run ID created"


def test_the_child_runs_with_its_params_and_decides_the_task(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _copy(cli)
    code, run_id = _apply(cli, "--param", "date=2026-03-01")
    assert code == 0
    child = f"{run_id}--etl-1"
    etl = tasks_by_id(cli.get_run(run_id))["etl"]
    assert etl["state"] == "succeeded"
    assert etl["outputs"] == {"run_id": child, "state": "succeeded"}
    run = cli.get_run(child)
    assert run["workflow"] == "child"
    assert tasks_by_id(run)["work"]["outputs"] == {"day": "2026-03-01"}
    ledger = (cli.cwd / "ledger").read_text().splitlines()
    assert ledger == ["child 2026-03-01", f"after {child} succeeded"]


def test_a_failed_child_fails_the_task_and_the_run(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _copy(cli)
    code, run_id = _apply(cli, "--param", "fail=yes")
    assert code == 1
    tasks = tasks_by_id(cli.get_run(run_id))
    assert tasks["etl"]["state"] == "failed"
    assert tasks["etl"]["attempts"][-1]["error"] == f"sub-run {run_id}--etl-1 failed"
    assert tasks["after"]["state"] == "skipped"


def test_cancelling_the_parent_cancels_the_child(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _copy(cli)
    res = cli.run("apply", "parent.yaml", "--detach", "--param", "sleep=60")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    child = f"{run_id}--etl-1"
    cli.start("worker", "--concurrency", "2", "--lease-ttl", "3")

    def child_running() -> bool:
        res = cli.run("get", "run", child, "-o", "json")
        return res.returncode == 0 and '"state": "running"' in res.stdout

    wait_for(child_running, what="the child run to start")
    assert cli.run("cancel", run_id).returncode == 0
    wait_for(lambda: cli.get_run(child)["state"] == "cancelled", what="the child's cancel")
    assert cli.get_run(run_id)["state"] == "cancelled"


def test_plan_time_problems_point_at_the_task(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    _copy(cli)
    text = (tmp_path / "parent.yaml").read_text()
    looped = text.replace("./child.yaml", "./parent.yaml").replace("{date:", "{day:")
    (tmp_path / "child.yaml").write_text(looped.replace("params.date", "params.day"))
    res = cli.run("plan", "parent.yaml")
    assert res.returncode == 2
    assert "child.yaml:9:17: sub-run cycle: parent.yaml -> child.yaml -> parent.yaml" in res.stderr
    (tmp_path / "parent.yaml").write_text(text.replace("./child.yaml", "./nope.yaml"))
    res = cli.run("plan", "parent.yaml")
    assert "parent.yaml:9:17: no such workflow file './nope.yaml'" in res.stderr
    bad = text.replace('day: "${{ params.date }}"', 'day: "${{ tasks.x.outputs.y }}"')
    (tmp_path / "parent.yaml").write_text(bad.replace("./child.yaml", "./child2.yaml"))
    shutil.copy(WORKFLOWS / "sub" / "child.yaml", tmp_path / "child2.yaml")
    res = cli.run("plan", "parent.yaml")
    assert res.returncode == 2
    assert "parent.yaml:10:" in res.stderr
    (tmp_path / "parent.yaml").write_text(text.replace("{day:", "{dya:"))
    res = cli.run("plan", "parent.yaml")
    assert "parent.yaml:10:" in res.stderr
    assert "params.dya: ./child.yaml has no param 'dya'" in res.stderr
