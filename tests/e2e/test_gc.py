"""`runner gc` end to end: keeps young runs, deletes old finished ones, dry run and JSON."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import Cli


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


def test_gc_cli_deletes_finished_runs_older_than_retention(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "2")
    assert res.returncode == 0, res.stderr
    run_id = cli.get_run()["id"]

    kept = cli.run("gc")  # default retention: 7 days
    assert (kept.returncode, kept.stdout) == (0, ""), kept.stderr
    assert "deleted 0 run(s) finished before" in kept.stderr

    local = cli.cwd / ".runner" / "logs" / run_id  # apply's --workers ran the tasks here
    assert local.is_dir()
    (local / "extra.log").write_text("kept until gc\n")

    dry = cli.run("gc", "--older-than", "1ms", "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert (data["dry_run"], data["runs"]) == (True, [run_id])
    assert data["finished_before"].endswith("Z")
    assert cli.get_run(run_id)["state"] == "succeeded"

    done = cli.run("gc", "--older-than", "1ms")
    assert (done.returncode, done.stdout) == (0, f"{run_id}\n"), done.stderr
    assert "deleted 1 run(s)" in done.stderr
    assert not local.exists()  # the local log files went with the run
    gone = cli.run("get", "run", run_id)
    assert gone.returncode == 2, gone.stderr
    assert run_id in gone.stderr
    assert json.loads(cli.run("get", "runs", "-o", "json").stdout) == []
    again = cli.run("gc", "--older-than", "1ms", "-o", "json")
    assert json.loads(again.stdout)["runs"] == []


def test_gc_cli_rejects_a_bad_duration(cli: Cli) -> None:
    res = cli.run("gc", "--older-than", "soon")
    assert res.returncode == 2
    assert "'soon' is not a duration" in res.stderr
