"""Concurrency groups through the real CLI on both stores: a new run of a group queues behind
the running one, or cancels it (its waiting `apply` exits 5)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import Cli, wait_for


def _started(cwd: Path) -> list[str]:
    path = cwd / "started.txt"
    return path.read_text().split() if path.is_file() else []


def _states(cli: Cli) -> dict[str, str]:
    res = cli.run("get", "runs")
    assert res.returncode == 0, res.stderr
    return {line.split()[0]: line for line in res.stdout.splitlines() if "deploy-" in line}


def test_a_new_run_queues_behind_the_running_one(any_store_cli: Cli) -> None:
    cli = any_store_cli
    wf = cli.workflow("group-queue.yaml")
    first = cli.run("apply", wf, "--detach").stdout.strip()
    second = cli.run("apply", wf, "--detach").stdout.strip()
    other = cli.run("apply", wf, "-p", "env=dev", "--detach").stdout.strip()
    worker = cli.start("worker", "--concurrency", "4")
    try:
        wait_for(lambda: sorted(_started(cli.cwd)) == sorted([first, other]), what="2 runs")
        line = _states(cli)[second]
        assert "queued: group deploy-prod" in line
        listed = cli.run("get", "run", second, "-o", "json").stdout
        assert '"waiting_reason": "queued: group deploy-prod"' in listed
        (cli.cwd / "release").touch()
        wait_for(lambda: len(_started(cli.cwd)) == 3, what="the queued run to start")
        assert _started(cli.cwd)[2] == second
        res = cli.run("get", "run", second, "--watch", "-o", "json")
        assert res.returncode == 0, res.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_cancel_in_progress_cancels_the_running_run(any_store_cli: Cli) -> None:
    cli = any_store_cli
    wf = cli.workflow("group-cancel.yaml")
    waiting = cli.start("apply", wf, "--workers", "1")
    try:
        wait_for(lambda: len(_started(cli.cwd)) == 1, what="the first run to start")
        (first,) = _started(cli.cwd)
        second = cli.run("apply", wf, "--detach").stdout.strip()
        wait_for(lambda: cli.get_run(first)["state"] == "cancelled", what="the cancel")
        # apply's local workers serve the whole queue: they may have taken the new run's task,
        # which they finish before apply returns
        (cli.cwd / "release").touch()
        assert waiting.wait(timeout=60) == 5  # its run was cancelled
    finally:
        waiting.kill()
        waiting.wait()
    run = cli.get_run(first)
    assert run["state"] == "cancelled"
    assert run["reason"] == (
        f"cancelled by run {second} (concurrency group deploy-prod, cancelInProgress)"
    )
    res = cli.run("apply", "--resume", second, "--workers", "1")
    assert res.returncode == 0, res.stderr
