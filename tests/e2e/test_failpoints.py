"""A worker killed at exact points of claim and finish (RUNNER_FAILPOINTS): no lost work (G1),
one recorded result (G2), execution at least once and said so (G4) — on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import Cli, tasks_by_id

KILLED = -9


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


def _crash_then_finish(cli: Cli, failpoint: str) -> dict[str, Any]:
    run_id = cli.run("apply", cli.workflow("sideeffects.yaml"), "--detach").stdout.strip()
    env = {"RUNNER_FAILPOINTS": f"{failpoint}=crash"}
    crashing = cli.start("worker", "--concurrency", "1", "--lease-ttl", "1", env=env)
    assert crashing.wait(timeout=60) == KILLED
    res = cli.run("apply", "--resume", run_id, "--workers", "1", "--lease-ttl", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    run = cli.get_run(run_id)
    assert run["state"] == "succeeded"
    return run


def test_crash_after_claim_commit_loses_the_attempt_not_the_task(cli: Cli) -> None:
    run = _crash_then_finish(cli, "claim.after_commit")
    one = tasks_by_id(run)["one"]
    assert [a["state"] for a in one["attempts"]] == ["lost", "succeeded"]
    # the crashed worker never ran it: exactly one execution
    assert (cli.cwd / "effects.txt").read_text().split("\n")[:2] == ["one 2", "two 1"]


def test_crash_before_finish_commit_reruns_the_task_once(cli: Cli) -> None:
    run = _crash_then_finish(cli, "finish.before_commit")
    one = tasks_by_id(run)["one"]
    assert [a["state"] for a in one["attempts"]] == ["lost", "succeeded"]
    assert len([a for a in one["attempts"] if a["state"] == "succeeded"]) == 1
    # the side effect happened twice (at least once, G4); the result was recorded once (G2)
    lines = (cli.cwd / "effects.txt").read_text().split()
    assert lines == ["one", "1", "one", "2", "two", "1"]
