"""`runner workers`: live workers with their labels, load and heartbeat; drain removes them."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from runner.models import WorkerInfo
from runner.store.sqlite import SqliteStore
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


def test_workers_shows_a_worker_whose_clock_is_off(tmp_path: Path) -> None:
    # two store objects as two worker processes, one of them with a clock 120 s ahead
    # (docs/RELIABILITY.md): each sees the other's clock off and records it with its heartbeat
    cli = Cli(tmp_path)
    good, skewed = (SqliteStore(str(tmp_path / "state.db")) for _ in range(2))
    try:
        clocks = {"good": 0.0, "skewed": 120.0}
        for store, name in ((good, "good"), (skewed, "skewed")):
            info = WorkerInfo(id=name, name=name)
            store.register_worker(info, now=time.time() + clocks[name], ttl=600)
        for store, name in [(good, "good"), (skewed, "skewed")] * 2:
            store.heartbeat(name, now=time.time() + clocks[name], ttl=600, running=0)
    finally:
        good.close()
        skewed.close()
    skews = {w["name"]: w["clock_skew"] for w in _workers(cli)}
    assert skews["skewed"] > 100
    assert skews["good"] < -100
    table = cli.run("workers").stdout
    assert "clock +12" in table
    assert "clock -12" in table
