"""`--metrics-addr`, `runner metrics --textfile` and `--log-format json` through the real CLI."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import Cli, wait_for


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_scheduler_serves_metrics_and_logs_json(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert cli.run("apply", cli.workflow("diamond.yaml")).returncode == 0
    log = tmp_path / "proc-1.log"
    proc = cli.start("scheduler", "--metrics-addr", "127.0.0.1:0", "--log-format", "json")
    try:
        wait_for(lambda: "metrics_listening" in log.read_text(), what="the metrics listener")
        (line,) = [x for x in _json_lines(log) if x["event"] == "metrics_listening"]
        url = re.search(r"http://\S+", line["message"]).group(0)  # type: ignore[union-attr]
        with urllib.request.urlopen(url, timeout=30) as reply:
            families = _families(reply.read().decode())
        runs = {
            (s.labels["workflow"], s.labels["state"]): s.value
            for s in families["runner_runs"].samples
        }
        assert runs == {("diamond", "succeeded"): 1.0}
        assert "runner_scheduler_leading" in families
        assert "process_cpu_seconds_total" not in families  # families are named without _total
        assert "process_cpu_seconds" in families
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    for record in records:
        assert set(record) >= {"time", "level", "component", "event", "run", "task", "worker"}
    assert any(r["event"] == "scheduler_started" for r in records)


def test_worker_json_logs_carry_its_id(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    log = tmp_path / "proc-1.log"
    proc = cli.start("worker", "--name", "w-json", "--log-format", "json", "--concurrency", "1")
    try:
        wait_for(lambda: "worker_serving" in log.read_text(), what="the worker to start")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    records = _json_lines(log)  # nothing but JSON lines, the drain included
    assert [r["event"] for r in records] == ["worker_serving", "worker_draining"]
    assert all(r["worker"].startswith("w-json-") for r in records)
    assert records[0]["component"] == "cli"
    assert records[0]["level"] == "info"


def test_metrics_addr_refuses_a_non_loopback_address_without_the_flag(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    for command in ("worker", "scheduler", "serve"):
        res = cli.run(command, "--metrics-addr", "0.0.0.0:9464", timeout=30)
        assert res.returncode == 2, res.stderr
        assert "--metrics-addr 0.0.0.0:9464 is not a loopback address" in res.stderr
        assert "--metrics-allow-remote" in res.stderr
        assert "Traceback" not in res.stderr
    res = cli.run("worker", "--metrics-addr", "localhost", timeout=30)
    assert res.returncode == 2
    assert "--metrics-addr 'localhost': expected HOST:PORT" in res.stderr


def test_metrics_textfile_is_written_whole_and_parses(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert cli.run("apply", cli.workflow("diamond.yaml")).returncode == 0
    out = tmp_path / "textfile" / "runner.prom"
    out.parent.mkdir()
    res = cli.run("metrics", "--textfile", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    families = _families(out.read_text())
    (sample,) = families["runner_runs"].samples
    assert (sample.labels, sample.value) == ({"workflow": "diamond", "state": "succeeded"}, 1.0)
    assert families["runner_tasks_finished"].samples == []  # it ended before the first read
    assert "process_cpu_seconds" not in families  # the exporter's own process is not news
    assert [p.name for p in out.parent.iterdir()] == ["runner.prom"]  # no temporary left

    printed = cli.run("metrics")
    assert printed.returncode == 0
    assert "runner_runs" in _families(printed.stdout)

    bad = cli.run("metrics", "--textfile", str(tmp_path / "missing" / "x.prom"))
    assert bad.returncode == 2
    assert f"--textfile {tmp_path / 'missing' / 'x.prom'}:" in bad.stderr
    assert cli.run("metrics", "--every", "15s").returncode == 2


def test_metrics_textfile_every_rewrites_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    out = tmp_path / "runner.prom"
    proc = cli.start("metrics", "--textfile", str(out), "--every", "100ms")
    try:
        wait_for(out.exists, what="the first write")
        first = out.stat().st_mtime_ns
        wait_for(lambda: out.stat().st_mtime_ns != first, what="a rewrite")
        assert "runner_store_up 1.0" in out.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143


def _scrape_started(log: Path) -> dict[str, Any]:
    """Wait for a text-mode worker's `metrics on URL` and `serving` lines (a SIGTERM before
    it serves ends it with 143, not a drain), then scrape URL."""
    wait_for(lambda: "serving" in log.read_text(), what="the worker to serve")
    url = re.search(r"metrics on (http://\S+)", log.read_text()).group(1)  # type: ignore[union-attr]
    with urllib.request.urlopen(url, timeout=30) as reply:
        return _families(reply.read().decode())


def test_worker_exports_its_own_series_and_the_cluster_only_when_asked(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    plain = cli.start("worker", "--name", "w1", "--metrics-addr", "127.0.0.1:0")
    cluster = cli.start("worker", "--name", "w2", "--metrics-addr", "[::1]:0", "--metrics-cluster")
    try:
        own = _scrape_started(tmp_path / "proc-1.log")
        assert "runner_store_op_seconds" in own
        assert "process_cpu_seconds" in own
        assert "runner_runs" not in own
        both = _scrape_started(tmp_path / "proc-2.log")
        assert "runner_store_op_seconds" in both
        assert "runner_worker_slots" in both
    finally:
        for proc in (plain, cluster):
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(timeout=30) for proc in (plain, cluster)] == [0, 0]
