"""Secrets by reference through the real CLI on both stores: never stored, masked everywhere
a user reads a run; `runner worker` tasks get a minimal environment (docs/SECURITY.md)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Cli, wait_for

TOKEN = "tok-1234567890-secret"
EXTRA = "extra-value-42"


def test_secret_is_masked_in_logs_json_and_reports(any_store_cli: Cli) -> None:
    cli = any_store_cli
    cli.env.update(CI_TOKEN=TOKEN, EXTRA=EXTRA)
    res = cli.run(
        "apply",
        cli.workflow("secrets.yaml"),
        "--workers",
        "2",
        "--secret",
        "EXTRA",
        "--junit",
        "j.xml",
        "--summary",
        "s.md",
        "-o",
        "json",
    )
    assert res.returncode == 1, res.stderr
    logs = cli.run("logs", "@latest", "use").stdout
    shown = [line.split(" ", 1)[1] for line in logs.splitlines()[1:]]
    assert shown == ["token ***", "extra ***"]  # split across two writes, still masked
    run_json = cli.run("get", "run", "@latest", "-o", "json").stdout
    texts = [res.stdout, res.stderr, logs, run_json, (cli.cwd / "j.xml").read_text()]
    texts.append((cli.cwd / "s.md").read_text())
    texts += [p.read_text(errors="replace") for p in (cli.cwd / ".runner").rglob("*.log")]
    for text in texts:
        assert TOKEN not in text
        assert EXTRA not in text
    assert '"out": "***"' in run_json
    if cli.env["RUNNER_STORE"].startswith("sqlite"):
        assert TOKEN.encode() not in (cli.cwd / "state.db").read_bytes()


def test_unset_secret_fails_the_task_with_its_reason(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    res = cli.run("apply", cli.workflow("secrets.yaml"), "--workers", "1")
    assert res.returncode == 1
    use = next(t for t in cli.get_run()["tasks"] if t["id"] == "use")
    assert use["attempts"][-1]["error"] == (
        "secret env TOKEN: the variable CI_TOKEN is not set where the worker runs; "
        "set it there (see docs/SECURITY.md)"
    )


def _seen_by_worker(cli: Cli, *flags: str) -> str:
    run_id = cli.run("apply", cli.workflow("secrets.yaml"), "--detach").stdout.strip()
    worker = cli.start("worker", "--concurrency", "1", *flags, env={"FOO": "bar"})
    try:
        wait_for(lambda: cli.get_run(run_id)["state"] == "failed", what="the run to end")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    return cli.run("logs", run_id, "seen").stdout.splitlines()[-1].split(" ", 1)[1]


@pytest.mark.parametrize(
    ("flags", "seen"),
    [
        ((), "FOO=unset HOME=set"),
        (("--pass-env", "FOO"), "FOO=bar HOME=set"),
        (("--inherit-env",), "FOO=bar HOME=set"),
    ],
)
def test_worker_tasks_get_a_minimal_environment_by_default(
    tmp_path: Path, flags: tuple[str, ...], seen: str
) -> None:
    assert _seen_by_worker(Cli(tmp_path), *flags) == seen


def test_apply_local_workers_inherit_the_environment(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.env["FOO"] = "bar"
    cli.run("apply", cli.workflow("secrets.yaml"), "--workers", "1")
    last = cli.run("logs", "@latest", "seen").stdout.splitlines()[-1]
    assert last.endswith(" FOO=bar HOME=set")
