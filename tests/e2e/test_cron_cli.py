"""`runner apply` on a scheduled file and the `runner cron` subcommands, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.helpers import REPO, Cli


def test_apply_scheduled_file_registers_and_reapply_changes_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    shutil.copy(REPO / "workflows" / "nightly-etl.yaml", tmp_path / "etl.yaml")
    first = cli.run("apply", "etl.yaml")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "schedule nightly-etl registered: '0 2 * * *' in Europe/Berlin"
    assert len([line for line in lines if line.startswith("  next: ")]) == 3
    assert all("T02:00:00+0" in line for line in lines[1:])
    again = cli.run("apply", "etl.yaml")
    assert again.returncode == 0
    assert again.stdout.splitlines()[0].startswith("schedule nightly-etl unchanged")
    runs = cli.run("get", "runs", "-o", "json")
    assert json.loads(runs.stdout) == []


def test_cron_subcommands(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    shutil.copy(REPO / "workflows" / "heartbeat.yaml", tmp_path / "hb.yaml")
    assert cli.run("apply", "hb.yaml").returncode == 0
    listed = json.loads(cli.run("cron", "list", "-o", "json").stdout)
    assert [(r["name"], r["schedule"], r["suspended"]) for r in listed] == [
        ("heartbeat", "@every 5m", False)
    ]
    nxt = cli.run("cron", "next", "heartbeat", "--count", "10").stdout.splitlines()
    assert len(nxt) == 10
    assert cli.run("cron", "suspend", "heartbeat").returncode == 0
    assert "yes" in cli.run("cron", "list").stdout
    assert cli.run("cron", "resume", "heartbeat").returncode == 0
    triggered = cli.run("cron", "trigger", "heartbeat")
    assert triggered.returncode == 0, triggered.stderr
    assert cli.get_run(triggered.stdout.strip())["workflow"] == "heartbeat"
    assert cli.run("cron", "delete", "heartbeat").returncode == 0
    missing = cli.run("cron", "delete", "heartbeat")
    assert missing.returncode == 2
    assert "schedule 'heartbeat' not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = cli.run("cron", "next", "x", "--count", "0")
    assert (bad.returncode, "--count" in bad.stderr) == (2, True)
    assert cli.run("scheduler", "--workflows", "nope").returncode == 2
