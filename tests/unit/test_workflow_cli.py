"""`runner validate` and `runner plan` through `runner.cli.main`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import cli

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "unit" / "fixtures" / "bad"


def test_validate_ok_and_bad_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(ROOT / "examples" / "hello.yaml")]) == 0
    assert "ok (hello, 1 task instances)" in capsys.readouterr().out
    assert (
        cli.main(["validate", str(ROOT / "examples" / "hello.yaml"), str(BAD / "self_dep.yaml")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{BAD / 'self_dep.yaml'}:7:17: task 'a' depends on itself" in err
    assert "Traceback" not in err


def test_validate_json_lists_problem_objects(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "--format", "json", str(BAD / "unknown_key.yaml")]) == 2
    problems = json.loads(capsys.readouterr().out)
    assert problems == [
        {
            "file": str(BAD / "unknown_key.yaml"),
            "line": 8,
            "col": 7,
            "path": "spec.tasks[0].dependson",
            "message": "tasks.a: unknown key 'dependson'; did you mean 'depends'?",
        }
    ]


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "mermaid"])
def test_plan_formats(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(
            ["plan", str(ROOT / "examples" / "etl.yaml"), "-p", "date=2026-03-01", "--format", fmt]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "extract[shard=3]" in out
    if fmt == "json":
        assert json.loads(out)["params"] == {"date": "2026-03-01"}


def test_plan_bad_param_is_exit_2_naming_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(ROOT / "examples" / "hello.yaml"), "--param", "whom=x"]) == 2
    assert (
        "--param whom: the workflow has no param 'whom'; did you mean 'who'?"
        in capsys.readouterr().err
    )
    assert cli.main(["plan", str(ROOT / "examples" / "hello.yaml"), "--param", "novalue"]) == 2
    assert "--param 'novalue': expected NAME=VALUE" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("validate", "plan"):
        assert cli.main([command, "--help"]) == 0
        assert "examples:" in capsys.readouterr().out


def test_python_m_runner_validate_subprocess(tmp_path: Path) -> None:
    bomb = tmp_path / "deep.yaml"
    bomb.write_text("[" * 100_000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "validate",
            str(ROOT / "examples" / "diamond.yaml"),
            str(bomb),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{bomb}:1:" in result.stderr
    assert "Traceback" not in result.stderr
