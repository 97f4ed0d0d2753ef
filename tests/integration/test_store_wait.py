"""Long-running commands started before their etcd wait for it, then serve."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.store import open_store
from tests import etcd_harness


def _etcd_binary() -> str:
    binary = etcd_harness.etcd_binary()
    if binary is None:
        message = "etcd is not on PATH (apt-get install etcd-server)"
        if etcd_harness.env_ci():
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _line_with(proc: subprocess.Popen[str], text: str) -> str:
    """The first line of the process's stderr holding `text` (the test timeout bounds it)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return line
    raise AssertionError(f"stderr ended without {text!r} (exit {proc.wait()})")


@pytest.mark.parametrize("command", [["worker", "--name", "late"], ["scheduler"]])
def test_command_waits_for_etcd_started_after_it(tmp_path: Path, command: list[str]) -> None:
    cluster = etcd_harness.Cluster(tmp_path / "etcd", size=1, binary=_etcd_binary())
    argv = [sys.executable, "-m", "runner", "--store", cluster.url, *command]
    proc = subprocess.Popen(argv, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        waiting = _line_with(proc, "waiting for the store")
        assert waiting.startswith(f"runner {command[0]}: waiting for the store: etcd unreachable")
        assert "retrying in" in waiting
        cluster.start()
        _line_with(proc, "serving" if command[0] == "worker" else "leading")
        if command[0] == "worker":
            store = open_store(cluster.url)
            try:
                assert [w.name for w in store.list_workers(now=time.time())] == ["late"]
            finally:
                store.close()
        proc.send_signal(signal.SIGTERM)  # a worker drains (exit 0), a scheduler resigns (143)
        assert proc.wait(timeout=30) == (0 if command[0] == "worker" else 143)
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert "Traceback" not in rest, rest
        store = open_store(cluster.url)
        try:
            assert store.leader(now=time.time()) is None  # resigned, not left to expire
            assert store.list_workers(now=time.time()) == []
        finally:
            store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
        cluster.stop()
