"""`runner logs -f` shows a running task's output while it runs, then the rest, once."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import Cli, wait_for


def test_logs_follow_streams_a_running_task(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    run_id = cli.run("apply", cli.workflow("talker.yaml"), "--detach").stdout.strip()
    worker = cli.start("worker", "--concurrency", "1")
    follower = cli.start("logs", "-f", run_id)
    out = tmp_path / "proc-2.log"
    try:
        wait_for(lambda: "first line" in out.read_text(), what="the live first line")
        assert cli.get_run(run_id)["tasks"][0]["state"] == "running"
        (tmp_path / "go").touch()
        assert follower.wait(timeout=60) == 0
    finally:
        for proc in (follower, worker):
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert text.count("first line") == 1
    assert text.count("second line") == 1
    assert text.index("first line") < text.index("second line")
    stored = cli.run("logs", run_id, "talk").stdout
    assert stored.count("first line") == 1  # streamed once, not sent again with the tail
    assert stored.count("second line") == 1
