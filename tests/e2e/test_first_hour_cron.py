"""The first hour with schedules and the help (issue 16): scheduler lines for each tick and
run end, one schedule name claimed by two files, params of a registered schedule, `cron list`
in the schedule's zone, and a command table and help text that leave nothing out."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from runner import cli as runner_cli
from tests.e2e.helpers import REPO, Cli, wait_for

EVERY_SECOND = """apiVersion: runner/v1
kind: Workflow
metadata: {name: tick}
spec:
  schedule: "@every 1s"
  concurrencyPolicy: Forbid
  tasks:
    - {name: nap, run: sleep 1.5}
"""


def test_serve_logs_each_fired_and_skipped_tick_and_each_run_end(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "tick.yaml").write_text(EVERY_SECOND)
    assert cli.run("apply", "tick.yaml").returncode == 0
    proc = cli.start("serve", "--workers", "1")
    log = tmp_path / "proc-1.log"

    def seen(pattern: str) -> bool:
        return re.search(pattern, log.read_text()) is not None

    try:
        wait_for(lambda: seen(r"schedule tick: tick \S+Z fired as run tick-cron-"), timeout=60)
        wait_for(lambda: seen(r"schedule tick: tick \S+Z skipped: run tick-cron-\S+ is still"))
        wait_for(lambda: seen(r"run tick-cron-\S+ succeeded in \d+\.\ds"), timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_two_files_claiming_one_schedule_is_an_error_naming_both(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(REPO / "workflows" / "nightly-etl.yaml", tmp_path / "a" / "etl.yaml")
    shutil.copy(REPO / "workflows" / "nightly-etl.yaml", tmp_path / "b" / "other.yaml")
    assert cli.run("apply", "a/etl.yaml").returncode == 0
    clash = cli.run("apply", "b/other.yaml")
    assert clash.returncode == 2
    assert str(tmp_path / "a" / "etl.yaml") in clash.stderr
    assert str(tmp_path / "b" / "other.yaml") in clash.stderr
    assert "--force" in clash.stderr
    assert _source(cli) == str(tmp_path / "a" / "etl.yaml")
    moved = cli.run("apply", "b/other.yaml", "--force")
    assert moved.returncode == 0, moved.stderr
    assert _source(cli) == str(tmp_path / "b" / "other.yaml")


def _source(cli: Cli) -> str:
    source: str = json.loads(cli.run("cron", "list", "-o", "json").stdout)[0]["source"]
    return source


def _params(cli: Cli) -> str:
    return cli.run("cron", "list", "-o", "json").stdout


def test_params_are_part_of_a_registered_schedule(tmp_path: Path) -> None:
    """`--param` alone never replaces a registered schedule's params silently: without
    --force apply refuses (with --now it runs once with them and leaves the schedule)."""
    cli = Cli(tmp_path)
    shutil.copy(REPO / "workflows" / "nightly-etl.yaml", tmp_path / "etl.yaml")
    assert cli.run("apply", "etl.yaml").returncode == 0
    refused = cli.run("apply", "etl.yaml", "--param", "env=dev")
    assert refused.returncode == 2
    assert "registered with params env=prod, not env=dev" in refused.stderr
    once = cli.run("apply", "etl.yaml", "--param", "env=dev", "--now", "--workers", "2")
    assert once.returncode == 0, once.stdout + once.stderr
    assert "schedule nightly-etl unchanged" in once.stdout
    assert cli.get_run()["params"] == {"env": "dev"}
    triggered = cli.run("cron", "trigger", "nightly-etl").stdout.strip()
    assert cli.get_run(triggered)["params"] == {"env": "prod"}
    forced = cli.run("apply", "etl.yaml", "--param", "env=dev", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "schedule nightly-etl updated" in forced.stdout
    triggered = cli.run("cron", "trigger", "nightly-etl").stdout.strip()
    assert cli.get_run(triggered)["params"] == {"env": "dev"}


def test_cron_list_shows_next_in_the_schedules_zone(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    shutil.copy(REPO / "workflows" / "nightly-etl.yaml", tmp_path / "etl.yaml")
    assert cli.run("apply", "etl.yaml").returncode == 0
    listed = cli.run("cron", "list").stdout
    first_next = cli.run("cron", "next", "nightly-etl", "--count", "1").stdout.strip()
    assert "Europe/Berlin" in listed
    assert first_next in listed  # like `cron next`: 02:00 with Berlin's offset
    assert re.search(r"T02:00:00\+0[12]:00", listed)


def test_plan_text_counts_in_the_singular(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "one.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: one}\n"
        "spec:\n  tasks:\n    - {name: a, run: 'true'}\n"
    )
    res = cli.run("plan", "one.yaml", "--format", "text")
    assert "1 task in 1 level" in res.stdout


def test_every_option_of_every_command_has_help_text() -> None:
    for command in runner_cli.COMMANDS:
        parser = runner_cli.build_parser(command.name)
        for action in _actions(parser, command.name):
            if action.option_strings and action.dest != "help":
                assert action.help, f"runner {command.name} {action.option_strings[0]}"


def _actions(parser: argparse.ArgumentParser, name: str) -> list[argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: list[argparse.Action] = []
    todo = [sub.choices[name]]
    while todo:
        p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
            else:
                found.append(action)
    return found


def test_cli_doc_table_lists_every_command_and_flag() -> None:
    doc = (REPO / "docs" / "CLI.md").read_text()
    table = "\n".join(line for line in doc.splitlines() if line.startswith("| `runner "))
    for command in runner_cli.COMMANDS:
        assert f"| `runner {command.name}" in table, command.name
        parser = runner_cli.build_parser(command.name)
        for action in _actions(parser, command.name):
            flags = [f for f in action.option_strings if f != "--help" and f != "-h"]
            if flags:
                named = (re.search(rf"(?<![\w-]){re.escape(f)}\b", table) for f in flags)
                assert any(named), f"runner {command.name} {flags[-1]}"
    assert "| `runner worker drain NAME`" in table
