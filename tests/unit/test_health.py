"""`runner health`: the verdict from live workers and the scheduler leader."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from runner.cli import health_cmds, main
from runner.models import WorkerInfo
from runner.store import open_store


def _worker(name: str, host: str, *, draining: bool = False) -> WorkerInfo:
    return WorkerInfo(id=f"{name}-1-abc", name=name, host=host, capacity=2, draining=draining)


def test_health_named_worker_live_or_not() -> None:
    workers = [_worker("gpu-1", "h1")]
    ok, why = health_cmds.verdict(workers, None, worker="gpu-1", scheduler=False, host="h9")
    assert ok
    assert "gpu-1-1-abc serving" in why
    ok, why = health_cmds.verdict(workers, None, worker="gpu-2", scheduler=False, host="h1")
    assert not ok
    assert "no live worker is named 'gpu-2'" in why


def test_health_default_is_this_hosts_worker_then_a_leader() -> None:
    workers = [_worker("w", "h1", draining=True)]
    ok, why = health_cmds.verdict(workers, None, worker=None, scheduler=False, host="h1")
    assert ok
    assert "draining" in why
    ok, why = health_cmds.verdict(workers, None, worker=None, scheduler=False, host="h2")
    assert not ok
    assert "no scheduler leads" in why
    ok, why = health_cmds.verdict([], "h2-7-abc", worker=None, scheduler=False, host="h2")
    assert ok
    assert why == "scheduler h2-7-abc leads"
    ok, why = health_cmds.verdict([], "h3-7-abc", worker=None, scheduler=True, host="h2")
    assert ok
    assert "stands by" in why


def test_health_command_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["health"]) == 1
    assert "unhealthy: no scheduler leads" in capsys.readouterr().err
    assert main(["health", "--worker", "nobody"]) == 1
    assert main(["--store", "etcd://127.0.0.1:1", "health"]) == 1
    assert "unhealthy: etcd unreachable" in capsys.readouterr().err


def test_health_is_healthy_while_this_hosts_worker_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///state.db")
    try:
        info = _worker("w1", socket.gethostname())
        store.register_worker(info, now=time.time(), ttl=60)
        assert main(["--store", "sqlite:///state.db", "health"]) == 0
        assert "healthy: worker w1-1-abc serving (0/2 running)" in capsys.readouterr().out
        store.deregister_worker(info.id, now=time.time())
        assert main(["--store", "sqlite:///state.db", "health", "--worker", "w1"]) == 1
    finally:
        store.close()
