"""The CLI loads a command's module, and the libraries only it needs, when that command runs.

Each case runs `runner.cli.main` in a fresh interpreter and reads back `sys.modules`, so an eager
import added anywhere on a command's path (docs/PERFORMANCE.md, "CLI start-up") fails here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner import cli

ROOT = Path(__file__).resolve().parents[2]
HELLO = str(ROOT / "examples" / "hello.yaml")

# main(argv), then the sorted names of every loaded module, as JSON, into the file argv[1]
PROBE = """\
import json, sys
from runner.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

STORE_LIBS = ("grpc", "etcd3")
HEAVY = ("jsonschema", "croniter", "rich", *STORE_LIBS)
WORKFLOW_LIBS = ("jsonschema",)
RUNNING = ("runner.store", "runner.worker", "runner.executor")


def _modules(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    """The exit code of `runner ARGV` in a fresh interpreter and the modules it had loaded."""
    out = tmp_path / "modules.json"
    env = {
        **os.environ,
        "RUNNER_STORE": f"sqlite:///{tmp_path / 'state.db'}",
        "RUNNER_LOG_DIR": str(tmp_path / "logs"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.is_file(), proc.stderr
    data = json.loads(out.read_text())
    return int(data["code"]), set(data["modules"])


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` (a package and its submodules) that are loaded."""
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A store with one finished run of examples/hello.yaml (applied in its own process)."""
    code, _ = _modules(tmp_path, "apply", HELLO, "--workers", "1")
    assert code == 0
    return tmp_path


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_load_no_heavy_library(tmp_path: Path, argv: list[str]) -> None:
    code, modules = _modules(tmp_path, *argv)
    assert code == (2 if not argv else 0)
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, ("runner.cli.run_cmds", *RUNNING)) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "runs"],
        ["get", "runs", "-o", "json"],
        ["get", "run", "@latest"],
        ["logs", "@latest"],
        ["logs", "@latest", "greet"],
        ["workers"],
    ],
)
def test_get_and_logs_load_no_workflow_library(finished_run: Path, argv: list[str]) -> None:
    code, modules = _modules(finished_run, *argv)
    assert code == 0
    assert _loaded(modules, (*WORKFLOW_LIBS, "runner.workflow", "runner.executor")) == []


def test_json_output_loads_no_rich(finished_run: Path) -> None:
    code, modules = _modules(finished_run, "get", "runs", "-o", "json")
    assert code == 0
    assert _loaded(modules, ("rich", "yaml")) == []


@pytest.mark.parametrize("argv", [["validate", HELLO], ["plan", HELLO, "--format", "json"]])
def test_validate_and_plan_load_no_store_worker_or_executor(
    tmp_path: Path, argv: list[str]
) -> None:
    code, modules = _modules(tmp_path, *argv)
    assert code == 0
    assert _loaded(modules, (*RUNNING, *STORE_LIBS, "rich")) == []


def test_apply_loads_neither_cron_loops_nor_bench(tmp_path: Path) -> None:
    code, modules = _modules(tmp_path, "apply", HELLO, "--workers", "1")
    assert code == 0
    unused = ("runner.cron", "runner.bench", "runner.benchrun", "runner.cli.serve_cmds")
    # networkx is the tests' oracle for runner/dag.py, never runner's own (75 ms to import);
    # jsonschema only explains an invalid file (a valid one passes the compiled check)
    assert _loaded(modules, (*unused, *STORE_LIBS, "networkx", "jsonschema")) == []


def test_cancel_and_cron_list_load_no_workflow_or_worker(finished_run: Path) -> None:
    for argv in (["cancel", "@latest"], ["cron", "list"]):
        code, modules = _modules(finished_run, *argv)
        assert code == 0, argv
        assert _loaded(modules, (*WORKFLOW_LIBS, "runner.worker", "runner.executor")) == []


def _real_parsers() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Every command's help line and full parser, as its module adds them."""
    found: dict[str, tuple[str, argparse.ArgumentParser]] = {}
    for module in sorted({c.module for c in cli.COMMANDS}):
        sub = argparse.ArgumentParser(prog="runner").add_subparsers()
        importlib.import_module(f"runner.cli.{module}").add_parsers(sub)
        helps = {a.dest: str(a.help) for a in sub._choices_actions}
        found.update({name: (helps[name], p) for name, p in sub.choices.items()})
    return found


def test_the_command_table_matches_the_modules() -> None:
    """`runner --help` reads the table: each line must be what the command's module says."""
    real = _real_parsers()
    assert sorted(c.name for c in cli.COMMANDS) == sorted(real)
    assert {c.name: c.help for c in cli.COMMANDS} == {n: h for n, (h, _) in real.items()}


def test_every_command_has_its_full_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"    {command.name} " in listing
        assert cli.main([command.name, "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: runner {command.name} [-h]"), text


def test_a_ctrl_c_while_the_command_module_loads_says_interrupted_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C in the first ~100 ms of `runner apply` (its module importing) printed a
    Python traceback."""

    def interrupted(module: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["apply", "x.yaml"]) == 130
    assert capsys.readouterr().err == "runner: interrupted\n"


def test_a_ctrl_c_dropped_by_an_import_is_still_acted_on_once_the_modules_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An extension module's init (yaml's, importlib's lock callbacks) can drop the
    KeyboardInterrupt of a Ctrl-C landing in it: `runner apply` then ran its run to the end and
    exited 0 (20 of 250 SIGINTs sent 55-75 ms after it started). The command's modules now
    load with the signal deferred."""
    real = importlib.import_module

    def dropping(name: str) -> object:
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(3):  # the handler runs at the next instruction check
                pass
        except KeyboardInterrupt:
            pass  # dropped, as such an init does
        return real(name)

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(importlib, "import_module", dropping)
    try:
        assert cli.main(["apply", "no-such-file.yaml"]) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    assert capsys.readouterr().err == "runner: interrupted\n"
