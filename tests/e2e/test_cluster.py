"""The cluster with real processes: dispatch distributions, mutexes, remote drain, detection.

Several `runner worker` processes and a `runner scheduler --dispatch X` share one store; runs
are applied with `--workers 0` so only those workers execute. Attempts per worker are counted
from `runner get run -o json`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, wait_for


@dataclass(frozen=True, slots=True, kw_only=True)
class Matrix:
    """A workflow file `<name>.yaml`: one task `t` running `run`, expanded `n` times by a matrix;
    `extra` is appended to the task's YAML."""

    name: str
    n: int
    dispatch: str | None = None
    run: str = "true"
    extra: str = ""

    def write(self, cli: Cli) -> str:
        """Write the file into the CLI's folder; its name."""
        values = ", ".join(str(i) for i in range(self.n))
        spec_dispatch = f"  dispatch: {self.dispatch}\n" if self.dispatch else ""
        text = (
            f"apiVersion: runner/v1\nkind: Workflow\nmetadata: {{name: {self.name}}}\nspec:\n"
            f"{spec_dispatch}  tasks:\n    - name: t\n      run: {json.dumps(self.run)}\n"
            f"      matrix: {{i: [{values}]}}\n{self.extra}"
        )
        (cli.cwd / f"{self.name}.yaml").write_text(text)
        return f"{self.name}.yaml"


def _per_worker(run: dict[str, Any]) -> Counter[str]:
    """Attempts per worker name (a worker id is `name-pid-suffix`)."""
    return Counter(a["worker"].rsplit("-", 2)[0] for t in run["tasks"] for a in t["attempts"])


def _workers(cli: Cli) -> list[dict[str, Any]]:
    res = cli.run("workers", "-o", "json")
    assert res.returncode == 0, res.stderr
    data: list[dict[str, Any]] = json.loads(res.stdout)
    return data


@contextmanager
def _cluster(cli: Cli, *workers: list[str], dispatch: str = "pull") -> Iterator[list[Any]]:
    """Start workers (each a list of extra flags) and a leading scheduler; stop them after."""
    procs = [cli.start("worker", "--lease-ttl", "2", *flags) for flags in workers]
    sched = cli.start("scheduler", "--dispatch", dispatch, "--lease-ttl", "2")
    log = cli.cwd / f"proc-{len(workers) + 1}.log"
    try:
        wait_for(lambda: len(_workers(cli)) == len(workers), what="workers to register")
        wait_for(lambda: log.exists() and "leading" in log.read_text(), what="a leader")
        yield procs
    finally:
        for p in [*procs, sched]:
            p.send_signal(signal.SIGTERM)
        for p in [*procs, sched]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _apply(cli: Cli, path: str) -> dict[str, Any]:
    res = cli.run("apply", path, "--workers", "0", "-o", "json", timeout=120)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _cli(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Cli:
    """A CLI on SQLite, or on a fresh prefix of the session's etcd server."""
    if backend == "sqlite":
        return Cli(tmp_path)
    server = request.getfixturevalue("etcd_server")
    return Cli(tmp_path, store=f"{server.url}/e2e-{uuid.uuid4().hex[:10]}/")


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_dispatch_distributions_end_to_end(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    cli = _cli(tmp_path, backend, request)
    flags = [["--name", f"w{w}", "--weight", str(w), "--concurrency", "4"] for w in (1, 2, 3)]
    with _cluster(cli, *flags, dispatch="weighted"):
        weighted = _per_worker(_apply(cli, Matrix(name="weighted", n=600).write(cli)))
        rr = _per_worker(_apply(cli, Matrix(name="rr", n=90, dispatch="round_robin").write(cli)))
        rand = _per_worker(_apply(cli, Matrix(name="rand", n=300, dispatch="random").write(cli)))
    print(f"{backend}: weighted {dict(weighted)} round_robin {dict(rr)} random {dict(rand)}")
    for name, share in (("w1", 100), ("w2", 200), ("w3", 300)):
        assert abs(weighted[name] - share) <= share * 0.10
    assert sum(rr.values()) == 90
    assert max(rr.values()) - min(rr.values()) <= 1
    expected = 100
    chi2 = sum((rand[n] - expected) ** 2 / expected for n in ("w1", "w2", "w3"))
    assert chi2 < 13.82  # 2 degrees of freedom, p = 0.001


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_least_load_gives_a_slow_worker_fewer_tasks(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    cli = _cli(tmp_path, backend, request)
    slow = 'case "$RUNNER_WORKER_NAME" in slow) sleep 0.4;; *) sleep 0.05;; esac'
    flags = [["--name", n, "--concurrency", "2"] for n in ("fast", "slow")]
    with _cluster(cli, *flags, dispatch="least_load"):
        counts = _per_worker(_apply(cli, Matrix(name="ll", n=40, run=slow).write(cli)))
    print(f"{backend}: least_load {dict(counts)}")
    assert counts["fast"] > 2 * counts["slow"]


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_mutex_across_runs_never_overlaps_with_real_workers(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    cli = _cli(tmp_path, backend, request)
    held = tmp_path / "held"
    body = f"mkdir {held} && sleep 0.05 && rmdir {held}"  # mkdir fails on an overlap
    extra = "      mutex: db\n"
    flags = [["--name", f"m{i}", "--concurrency", "3"] for i in range(3)]
    with _cluster(cli, *flags):
        files = [Matrix(name=f"mx{i}", n=8, run=body, extra=extra).write(cli) for i in range(2)]
        runs = [cli.start("apply", f, "--workers", "0") for f in files]
        codes = [p.wait(timeout=120) for p in runs]
    assert codes == [0, 0]
    res = cli.run("locks", "-o", "json")
    assert (res.returncode, json.loads(res.stdout)) == (0, [])


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_worker_drain_by_name_from_elsewhere(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    cli = _cli(tmp_path, backend, request)
    ready = tmp_path / "started"
    path = Matrix(name="drained", n=1, run=f"touch {ready} && sleep 1").write(cli)
    proc = cli.start("worker", "--name", "dr", "--lease-ttl", "2", "--drain-timeout", "20")
    try:
        wait_for(lambda: len(_workers(cli)) == 1, what="the worker")
        run_id = cli.run("apply", path, "--detach").stdout.strip()
        wait_for(ready.exists, what="the task to start")
        res = cli.run("worker", "drain", "dr")
        assert res.returncode == 0, res.stderr
        assert "draining" in res.stdout
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    (task,) = cli.get_run(run_id)["tasks"]
    assert task["state"] == "succeeded"  # finished within --drain-timeout
    assert _workers(cli) == []
    assert cli.run("worker", "drain", "dr").returncode == 2


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_kill_9_detection_time(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = None
    if backend == "etcd":
        server = request.getfixturevalue("etcd_server")
        store = f"{server.url}/det-{tmp_path.name[-8:]}/"
    cli = Cli(tmp_path, store=store)
    ready = tmp_path / "started"
    hang_once = f"[ -e {ready} ] || {{ touch {ready}; sleep 60; }}"
    path = Matrix(name="det", n=1, run=hang_once).write(cli)
    ttl = 2.0
    victim = cli.start("worker", "--name", "victim", "--lease-ttl", str(ttl))
    wait_for(lambda: len(_workers(cli)) == 1, what="the victim")
    run_id = cli.run("apply", path, "--detach").stdout.strip()
    wait_for(ready.exists, what="the task to start")
    rescuer = cli.start("worker", "--name", "rescuer", "--lease-ttl", str(ttl))
    try:
        wait_for(lambda: len(_workers(cli)) == 2, what="the rescuer")
        killed = time.monotonic()
        victim.kill()

        def claimed_again() -> bool:
            return len(cli.get_run(run_id)["tasks"][0]["attempts"]) == 2

        wait_for(claimed_again, timeout=30, what="the task to be claimed again")
        detected = time.monotonic() - killed
        print(f"{backend}: kill -9 -> claimed again in {detected:.2f} s (TTL {ttl} s)")
        assert detected <= ttl + 1.5 + 1.0  # G6, plus the CLI polling in this test
        wait_for(lambda: cli.get_run(run_id)["state"] == "succeeded", what="the run")
    finally:
        for p in (victim, rescuer):
            p.kill()
            p.wait()
