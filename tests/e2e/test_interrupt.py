"""Ctrl-C of `runner apply` stores the run's cancel before it exits 130 (issue 15, item 9), on
both stores. Failpoints hold the process at the exact window (RUNNER_FAILPOINTS=...=pause(N))
while the test sends the signal, instead of hoping a repetition lands in it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Cli, wait_for

EXIT_SIGINT = 130


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


def _run_ids(cli: Cli) -> list[str]:
    res = cli.run("get", "runs", "-o", "json")
    assert res.returncode == 0, res.stderr
    return [r["id"] for r in json.loads(res.stdout)]


def _log(cli: Cli) -> str:
    return "".join(p.read_text(errors="replace") for p in Path(cli.cwd).glob("proc-*.log"))


def test_interrupt_after_the_run_is_stored_and_before_it_is_followed_cancels_it(
    cli: Cli,
) -> None:
    # the window: create_run has committed, apply has not yet printed the id nor started
    # following (its interrupt handler)
    env = {"RUNNER_FAILPOINTS": "create_run.after_commit=pause(60)"}
    proc = cli.start("apply", cli.workflow("slow.yaml"), "--workers", "0", env=env)
    wait_for(lambda: len(_run_ids(cli)) == 1, what="the run to be stored")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == EXIT_SIGINT
    (run_id,) = _run_ids(cli)
    run = cli.get_run(run_id)
    assert (run["state"], run["tasks"][0]["state"]) == ("cancelled", "cancelled"), _log(cli)


def test_interrupt_while_the_local_workers_start_cancels_the_run(cli: Cli) -> None:
    # the window: the id printed, the local workers started, the follow not yet begun (the
    # process sends itself SIGINT there); it exited 130 leaving the run to run on
    env = {"RUNNER_FAILPOINTS": "apply.before_follow=kill(INT)"}
    proc = cli.start("apply", cli.workflow("slow.yaml"), "--workers", "1", env=env)
    assert proc.wait(timeout=30) == EXIT_SIGINT, _log(cli)
    assert "cancelling run" in _log(cli)
    run = cli.get_run("@latest")
    assert (run["state"], run["tasks"][0]["state"]) == ("cancelled", "cancelled"), _log(cli)


def test_a_second_signal_during_the_cancel_does_not_cut_it_short(cli: Cli) -> None:
    env = {"RUNNER_FAILPOINTS": "cancel_run.before=pause(3)"}
    proc = cli.start("apply", cli.workflow("slow.yaml"), "--workers", "0", env=env)
    wait_for(lambda: "created" in _log(cli), what="the run id")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "cancelling run" in _log(cli), what="the cancel to start")
    proc.send_signal(signal.SIGTERM)  # lands in the cancel (held 3 s at the failpoint)
    assert proc.wait(timeout=30) == EXIT_SIGINT, _log(cli)
    run = cli.get_run("@latest")
    assert run["state"] == "cancelled", _log(cli)


def test_an_interrupt_whose_cancel_fails_exits_3_and_says_so(cli: Cli) -> None:
    env = {"RUNNER_FAILPOINTS": "cancel_run.before=error"}
    proc = cli.start("apply", cli.workflow("slow.yaml"), "--workers", "0", env=env)
    wait_for(lambda: "created" in _log(cli), what="the run id")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 3, _log(cli)  # not 130: the run was not cancelled
    assert "was not cancelled" in _log(cli)
    assert "Traceback" not in _log(cli)
    assert cli.get_run("@latest")["state"] == "pending"
