"""Cached tasks through the real CLI on both stores: a rerun of an unchanged workflow starts no
cached task's process; a changed listed file reruns exactly its task and the tasks after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Cli, tasks_by_id

_last: dict[str, str] = {}  # the output of the latest _apply


def _ledger(cli: Cli) -> list[str]:
    """The task processes started since the last call (each appends its name)."""
    path = cli.cwd / "ledger"
    lines = path.read_text().split() if path.exists() else []
    path.write_text("")
    return sorted(lines)


def _apply(cli: Cli, *extra: str) -> dict[str, dict[str, Any]]:
    res = cli.run("apply", "cached.yaml", "--workers", "2", *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    _last["stdout"] = res.stdout
    run = cli.get_run()
    assert run["state"] == "succeeded"
    return tasks_by_id(run)


def _setup(cli: Cli) -> None:
    cli.workflow("cached.yaml")
    (cli.cwd / "src").mkdir()
    (cli.cwd / "src" / "app.py").write_text("v1")
    (cli.cwd / "lint.cfg").write_text("strict")


def test_second_apply_starts_no_cached_process_and_restores_outputs(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _setup(cli)
    first = _apply(cli)
    assert _ledger(cli) == ["always", "build", "deps", "lint", "test"]
    assert not any(t["cached"] for t in first.values())
    second = _apply(cli)
    assert _ledger(cli) == ["always"]  # the one task without a cache
    assert {i for i, t in second.items() if t["cached"]} == {"deps", "build", "test", "lint"}
    assert second["build"]["outputs"] == {"artifact": "a-v1"}
    assert second["deps"]["outputs"] == {"env": "venv-plain"}
    assert second["build"]["attempts"][-1]["reason"] == "cached"
    table = cli.run("get", "run", "@latest").stdout
    assert "cached" in table
    assert " build succeeded (cached)" in _last["stdout"]  # apply's progress lines of apply


def test_changing_a_listed_file_reruns_its_task_and_its_dependents(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _setup(cli)
    _apply(cli)
    _ledger(cli)
    (cli.cwd / "src" / "app.py").write_text("v2")
    tasks = _apply(cli)
    assert _ledger(cli) == ["always", "build", "test"]
    assert tasks["build"]["outputs"] == {"artifact": "a-v2"}
    (cli.cwd / "lint.cfg").write_text("lenient")
    _apply(cli)
    assert _ledger(cli) == ["always", "lint"]
    _apply(cli, "--param", "flavour=fancy")  # deps' key changes: everything after it reruns
    assert _ledger(cli) == ["always", "build", "deps", "lint", "test"]


def test_no_cache_reruns_and_cache_rm_forgets(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _setup(cli)
    _apply(cli)
    _ledger(cli)
    tasks = _apply(cli, "--no-cache")
    assert _ledger(cli) == ["always", "build", "deps", "lint", "test"]
    assert not any(t["cached"] for t in tasks.values())
    entries = json.loads(cli.run("cache", "ls", "-o", "json").stdout)
    assert sorted(e["task"] for e in entries) == ["build", "deps", "lint", "test"]
    lint = next(e["key"] for e in entries if e["task"] == "lint")
    res = cli.run("cache", "rm", lint[:10])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [lint]
    _apply(cli)
    assert _ledger(cli) == ["always", "lint"]
    res = cli.run("cache", "rm", "abc")
    assert res.returncode == 2
    assert "at least 6 characters" in res.stderr
    assert cli.run("gc", "--older-than", "1ms").returncode == 0
    assert json.loads(cli.run("cache", "ls", "-o", "json").stdout) == []


def test_a_pattern_outside_the_folder_is_a_validation_error(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    text = (Path(__file__).parent / "workflows" / "cached.yaml").read_text()
    (tmp_path / "w.yaml").write_text(text.replace('["lint.cfg"]', '["../lint.cfg"]'))
    res = cli.run("plan", "w.yaml")
    assert res.returncode == 2
    assert "w.yaml:22:" in res.stderr
    assert "relative to the workflow file's folder" in res.stderr
