"""deploy/compose.yaml for real: up, submit from the host, faults, a drain, down.

podman 4.3 without systemd runs no healthchecks by itself and podman-compose ignores
`condition: service_healthy`: the cluster converges because runner waits for its store.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import etcd_harness
from tests.container import podman as pm
from tests.container.conftest import REPO

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]

PROJECT = "runnertest"
RUNNER_SERVICES = ("worker-a", "worker-b", "worker-c", "scheduler1", "scheduler2")
TICK = 2.0  # seconds between the ticks of the test's schedule
WORKFLOWS = {
    "tick": f"""\
apiVersion: runner/v1
kind: Workflow
metadata: {{name: tick}}
spec:
  schedule: "@every {TICK:g}s"
  startingDeadlineSeconds: 60
  catchup: all                 # the ticks due during a failover fire late, none is missed
  tasks:
    - name: ping
      run: echo tick
""",
}
IN_FLIGHT = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: inflight}
spec:
  tasks:
    - name: long
      selector: {size: large}
      run: sleep 8; echo done
    - name: after
      depends: [long]
      run: echo after
"""
ON_A = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: on-a}
spec:
  tasks:
    - name: work
      selector: {zone: a}
      run: echo started; sleep 4; echo finished
"""


class Cluster:
    """The compose project and the runner CLI on the host, through the published ports."""

    def __init__(self, podman: pm.Podman, env: dict[str, str], url: str, tmp: Path) -> None:
        self.podman, self.env, self.url, self.tmp = podman, env, url, tmp

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podman_compose", "-p", PROJECT]
        argv += ["-f", str(REPO / "deploy" / "compose.yaml"), *args]
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "runner", "--store", self.url, *args]
        return subprocess.run(
            argv, cwd=self.tmp, capture_output=True, text=True, timeout=timeout, check=False
        )

    def json(self, *args: str) -> Any:
        proc = self.cli(*args, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"


def _until(check: Callable[[], Any], what: str, *, within: float = 60.0) -> Any:
    """Poll `check` until it returns a true value (an event wait with a deadline)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:g} s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def cluster(
    podman: pm.Podman, runner_image: str, etcd_image: str, tmp_path: Path
) -> Iterator[Cluster]:
    folder = tmp_path / "workflows"
    folder.mkdir()
    folder.chmod(0o755)
    for name, text in WORKFLOWS.items():
        (folder / f"{name}.yaml").write_text(text)
    ports = [etcd_harness.free_port() for _ in range(3)]
    env = {**podman.env, "ETCD_IMAGE": etcd_image, "RUNNER_IMAGE": runner_image}
    env |= {f"ETCD{i + 1}_PORT": str(port) for i, port in enumerate(ports)}
    env["RUNNER_WORKFLOWS"] = str(folder)
    url = "etcd://" + ",".join(f"127.0.0.1:{port}" for port in ports)
    c = Cluster(podman, env, url, tmp_path)
    c.compose("down", "-v", "-t", "5")  # what a previous, interrupted run left
    started = time.monotonic()
    try:
        c.compose("up", "-d")
        print(f"\ncompose up {time.monotonic() - started:.1f} s")
        yield c
    finally:
        if sys.exc_info()[0] is not None:
            for service in ("scheduler1", "scheduler2", "worker-a"):
                print(podman.run("logs", c.container(service), check=False).stderr[-3000:])
        down = time.monotonic()
        # runner's services before etcd (podman-compose may stop etcd first: then each worker
        # waits out its store timeouts to deregister)
        c.compose("stop", "-t", "30", *RUNNER_SERVICES)
        c.compose("down", "-v", "-t", "30")
        podman.run("volume", "prune", "-f")  # the runner containers' anonymous volumes
        label = f"label=io.podman.compose.project={PROJECT}"
        assert podman.run("ps", "-a", "-q", "--filter", label).stdout.strip() == ""
        assert podman.run("volume", "ls", "-q").stdout.strip() == ""
        print(f"compose down {time.monotonic() - down:.1f} s")


def test_compose_cluster_converges_survives_faults_and_drains(cluster: Cluster) -> None:
    podman = cluster.podman
    names = _until(
        lambda: (
            sorted(w["name"] for w in cluster.json("workers"))
            == ["worker-a", "worker-b", "worker-c"]
        ),
        "three live workers",
    )
    assert names
    _until(lambda: cluster.cli("health", "--scheduler").returncode == 0, "a leading scheduler")
    for service in RUNNER_SERVICES:
        check = podman.run("healthcheck", "run", cluster.container(service), check=False)
        assert check.returncode == 0, f"{service}: {check.stdout}{check.stderr}"

    # a workflow submitted from the host through the published loopback ports
    apply = cluster.cli("apply", str(REPO / "examples" / "diamond.yaml"), "--timeout", "60")
    assert apply.returncode == 0, apply.stdout + apply.stderr

    # faults: the leading scheduler and the leading etcd member die while a run is in flight
    (cluster.tmp / "inflight.yaml").write_text(IN_FLIGHT)
    detached = cluster.cli("apply", "inflight.yaml", "--detach")
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.strip()
    _until(lambda: _task_state(cluster, run_id, "long") == "running", "the long task running")
    leader = cluster.cli("health", "--scheduler").stdout
    leading = "scheduler1" if "scheduler scheduler1-" in leader else "scheduler2"
    assert f"scheduler {leading}-" in leader, leader
    killed_at = time.time()
    podman.run("kill", cluster.container(leading))
    etcd_leader = _etcd_leader(cluster)
    podman.run("kill", cluster.container(etcd_leader))
    print(f"killed {leading} (leading scheduler) and {etcd_leader} (leading etcd member)")
    resumed = cluster.cli("apply", "--resume", run_id, "--timeout", "90")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _until(lambda: _latest_tick(cluster) > killed_at + 6 * TICK, "ticks after the failover")
    _assert_every_tick_once(cluster, killed_at)

    # `docker stop` of a worker drains it: its running task finishes, it exits 0
    (cluster.tmp / "on-a.yaml").write_text(ON_A)
    detached = cluster.cli("apply", "on-a.yaml", "--detach")
    run_id = detached.stdout.strip()
    _until(lambda: _task_state(cluster, run_id, "work") == "running", "the task on worker-a")
    podman.run("stop", "-t", "30", cluster.container("worker-a"))
    code = podman.run("inspect", "--format", "{{.State.ExitCode}}", cluster.container("worker-a"))
    logs = podman.run("logs", cluster.container("worker-a")).stderr
    assert code.stdout.strip() == "0", logs
    assert "draining" in logs
    run = cluster.json("get", "run", run_id)
    assert run["state"] == "succeeded", run
    assert "worker-a" not in [w["name"] for w in cluster.json("workers")]


def _etcd_leader(cluster: Cluster) -> str:
    """The name of the etcd member that leads, asked of etcd1 alone (its own status names the
    leader's id, its member list the names): a status query across the members times out
    whenever podman's DNS is slow to answer for one of them, which the members ride out."""
    return str(_until(lambda: _leader_name(cluster), "etcd1 to name the leading member"))


def _leader_name(cluster: Cluster) -> str | None:
    def etcdctl(*args: str) -> Any:
        out = cluster.podman.run(
            "exec", cluster.container("etcd1"), "etcdctl", *args, "-w", "json", check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    status, members = etcdctl("endpoint", "status"), etcdctl("member", "list")
    if not status or not members:
        return None
    leader = status[0]["Status"]["leader"]
    names = {m["ID"]: m["name"] for m in members["members"]}
    return names.get(leader)


def _task_state(cluster: Cluster, run_id: str, task: str) -> str:
    run = cluster.json("get", "run", run_id)
    return next(str(t["state"]) for t in run["tasks"] if t["name"] == task)


def _tick_times(cluster: Cluster) -> list[float]:
    runs = cluster.json("get", "runs", "--workflow", "tick", "--limit", "10000")
    return sorted(datetime.fromisoformat(r["scheduled_time"]).timestamp() for r in runs)


def _latest_tick(cluster: Cluster) -> float:
    times = _tick_times(cluster)
    return times[-1] if times else 0.0


def _assert_every_tick_once(cluster: Cluster, killed_at: float) -> None:
    """From the first tick to the last, one run per tick: none doubled, none missed."""
    times = _tick_times(cluster)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    (entry,) = cluster.json("cron", "list")
    late = [round(t - killed_at, 1) for t in times]
    assert gaps, times
    assert all(gap == TICK for gap in gaps), f"ticks after the kill (s): {late}, {entry}"
    assert (entry["missed"], entry["skipped"]) == (0, 0), entry
    print(f"ticks {len(times)}, each once; missed {entry['missed']}")
