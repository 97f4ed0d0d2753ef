"""`runner apply --junit/--summary` and `runner report` through the real CLI, on both stores,
whatever the exit code (docs/CI.md)."""

from __future__ import annotations

import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from tests.e2e.helpers import Cli, wait_for

XSD = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "junit.xsd"


def _cases(path: Path) -> dict[str, ET.Element]:
    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    return {c.get("name", ""): c for c in ET.parse(path).iter("testcase")}


def test_apply_writes_junit_and_summary_of_a_failed_run(any_store_cli: Cli) -> None:
    cli = any_store_cli
    res = cli.run(
        "apply",
        cli.workflow("ci.yaml"),
        "--workers",
        "2",
        "--junit",
        "out/junit.xml",
        "--summary",
        "summary.md",
    )
    assert res.returncode == 1, res.stderr
    cases = _cases(cli.cwd / "out" / "junit.xml")
    assert list(cases) == ["build", "test", "lint", "deploy"]
    failure = cases["test"].find("failure")
    assert failure is not None
    assert failure.get("message") == "exit 3 after 3 of 3 attempts"
    out = (cases["test"].findtext("system-out") or "").splitlines()
    assert len(out) == 50
    assert out[-1].endswith("out 60")
    assert cases["lint"].find("skipped") is not None
    summary = (cli.cwd / "summary.md").read_text()
    run_id = cli.get_run()["id"]
    assert summary.startswith(f"## ❌ `ci`: run `{run_id}` failed\n")
    assert f"| `test` | exit 3 after 3 of 3 attempts | `runner logs {run_id} test` |" in summary


def test_report_of_a_detached_run_and_step_summary_auto(any_store_cli: Cli) -> None:
    cli = any_store_cli
    run_id = cli.run("apply", cli.workflow("ci.yaml"), "--detach").stdout.strip()
    worker = cli.start("worker", "--concurrency", "2")
    try:
        wait_for(lambda: cli.get_run(run_id)["state"] == "failed", what="the run to end")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    step = cli.cwd / "step.md"
    step.write_text("earlier step text\n")
    cli.env["GITHUB_STEP_SUMMARY"] = str(step)
    res = cli.run("report", run_id, "--junit", "r.xml", "--summary", "auto")
    assert res.returncode == 0, res.stderr
    assert set(_cases(cli.cwd / "r.xml")) == {"build", "test", "lint", "deploy"}
    text = step.read_text()
    assert text.startswith("earlier step text\n## ❌ `ci`")  # appended, as GitHub expects


def test_report_needs_an_output(tmp_path: Path) -> None:
    res = Cli(tmp_path).run("report", "@latest")
    assert res.returncode == 2
    assert "--junit PATH and/or --summary" in res.stderr


def test_apply_writes_the_report_when_it_gives_up_waiting(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    res = cli.run(
        "apply",
        cli.workflow("slow.yaml"),
        "--workers",
        "0",
        "--timeout",
        "0.3",
        "--junit",
        "j.xml",
    )
    assert res.returncode == 4
    skipped = _cases(tmp_path / "j.xml")["slow"].find("skipped")
    assert skipped is not None
    assert skipped.get("message", "").startswith("not finished:")


def test_apply_writes_the_report_of_a_cancelled_run(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    apply = cli.start("apply", cli.workflow("slow.yaml"), "--workers", "1", "--junit", "j.xml")
    try:
        wait_for(lambda: (tmp_path / "started.txt").is_file(), what="the task to start")
        assert cli.run("cancel", "@latest").returncode == 0
        assert apply.wait(timeout=60) == 5
    finally:
        apply.kill()
        apply.wait()
    assert _cases(tmp_path / "j.xml")["slow"].find("skipped") is not None


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_apply_still_writes_its_report(tmp_path: Path, sig: int, code: int) -> None:
    cli = Cli(tmp_path)
    apply = cli.start(
        "apply",
        cli.workflow("slow.yaml"),
        "--workers",
        "1",
        "--summary",
        "s.md",
        "--junit",
        "j.xml",
    )
    try:
        wait_for(lambda: (tmp_path / "started.txt").is_file(), what="the task to start")
        apply.send_signal(sig)
        assert apply.wait(timeout=60) == code
    finally:
        apply.kill()
        apply.wait()
    assert _cases(tmp_path / "j.xml")["slow"].find("skipped") is not None
    assert "run `" in (tmp_path / "s.md").read_text()


def test_validate_format_github_prints_one_annotation_per_problem(tmp_path: Path) -> None:
    (tmp_path / "bad, 1.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata:\n  name: bad\nspec:\n  tasks:\n"
        "    - name: a\n      run: echo\n      retries: -1\n      timeout: 5q\n"
    )
    cli = Cli(tmp_path)
    res = cli.run("validate", "bad, 1.yaml", "--format", "github")
    assert res.returncode == 2
    assert res.stdout.splitlines() == [
        "::error file=bad%2C 1.yaml,line=9,col=16::tasks.a.retries: -1 is less than the "
        "minimum of 0",
        "::error file=bad%2C 1.yaml,line=10,col=16::tasks.a.timeout: '5q' is not valid; use a "
        "duration such as 500ms, 2s, 5m, 1h30m or a number of seconds",
    ]
    text = cli.run("validate", "bad, 1.yaml")
    assert "bad, 1.yaml:9:16: tasks.a.retries" in text.stderr  # GitLab and plain CI: unchanged


def test_apply_on_github_actions_annotates_failures_and_groups_logs(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.env["GITHUB_ACTIONS"] = "true"
    res = cli.run("apply", cli.workflow("ci.yaml"), "--workers", "2")
    assert res.returncode == 1
    run_id = cli.get_run()["id"]
    lines = res.stdout.splitlines()
    assert (
        f"::error title=test::exit 3 after 3 of 3 attempts; log: runner logs {run_id} test" in lines
    )
    assert (
        f"::warning title=lint::exit 1 after 1 of 1 attempts; log: runner logs {run_id} lint"
        in lines
    )
    start = lines.index("::group::test (failed, attempt 3)")
    assert lines[start + 1].endswith(" out 1")
    assert lines[start + 61] == "::endgroup::"
    assert "::group::build (succeeded, attempt 1)" in lines
    logs = cli.run("logs", run_id, "build").stdout.splitlines()
    assert logs[0] == "::group::build (attempt 1 of 1, succeeded)"
    assert logs[-1] == "::endgroup::"
