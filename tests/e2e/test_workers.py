"""`runner workers`: live workers with their labels, load and heartbeat; drain removes them."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Cli, wait_for


def _workers(cli: Cli) -> list[dict[str, Any]]:
    res = cli.run("workers", "-o", "json")
    assert res.returncode == 0, res.stderr
    data: list[dict[str, Any]] = json.loads(res.stdout)
    return data


def test_workers_lists_a_live_worker_then_forgets_it_after_drain(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    labels = ["--labels", "gpu=true,zone=a", "--weight", "3"]
    proc = cli.start("worker", "--name", "w-one", *labels, "--concurrency", "2")
    try:
        wait_for(lambda: len(_workers(cli)) == 1, what="the worker to register")
        (worker,) = _workers(cli)
        assert worker["name"] == "w-one"
        assert worker["labels"] == {"gpu": "true", "zone": "a"}
        assert (worker["weight"], worker["capacity"], worker["running"]) == (3, 2, 0)
        assert worker["pid"] == proc.pid
        assert 0 <= worker["heartbeat_age"] < 30
        table = cli.run("workers")
        assert "w-one" in table.stdout
        assert "gpu=true,zone=a" in table.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert _workers(cli) == []
