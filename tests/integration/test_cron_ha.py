"""G7 in real time: `@every 1s` schedules fired by several `runner scheduler` processes while the
leader is killed with SIGKILL and a standby is paused with SIGSTOP and resumed. Over the window
the run list holds every tick exactly once: no duplicates, and no gaps (`catchup: all` within a
generous starting deadline fires the ticks of the takeover window late, oldest first)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.models import Run
from runner.store import Store, open_store
from tests.e2e.helpers import Cli, wait_for

TTL = "1"
SCHEDULE = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: tick}
spec:
  schedule: "@every 1s"
  catchup: all
  startingDeadlineSeconds: 60
  tasks:
    - name: t
      run: "true"
"""


def _runs(store: Store) -> list[Run]:
    return store.list_runs(workflow="tick")


def _ticks(store: Store) -> list[float]:
    return sorted(r.scheduled_time or 0.0 for r in _runs(store))


def _leader_pid(store: Store, *, other_than: int | None = None) -> int:
    """The pid of the leading scheduler (candidate ids are host-pid-suffix)."""
    found: list[int] = []

    def elected() -> bool:
        leader = store.leader(now=time.time())
        pid = None if leader is None else int(leader.rsplit("-", 2)[1])
        found[:] = [] if pid is None or pid == other_than else [pid]
        return bool(found)

    wait_for(elected, timeout=20, what="a leader")
    return found[0]


def _first_run_created_after(store: Store, wall: float) -> float:
    found: list[float] = []

    def fired() -> bool:
        found[:] = [r.created_at for r in _runs(store) if r.created_at > wall]
        return bool(found)

    wait_for(fired, timeout=20, what="a tick fired after the takeover")
    return min(found)


def _check_exactly_once(ticks: list[float]) -> None:
    assert len(ticks) == len(set(ticks)), f"duplicate ticks: {ticks}"
    gaps = [b - a for a, b in itertools.pairwise(ticks) if b - a != 1.0]
    assert not gaps, f"gaps between ticks: {gaps} in {ticks}"


def _more_ticks(store: Store, n: int, what: str) -> None:
    count = len(_ticks(store))
    wait_for(lambda: len(_ticks(store)) >= count + n, timeout=30, what=what)


def _kill_leader(store: Store, label: str) -> int:
    """SIGKILL the leader; print the time from its death to the next fired tick."""
    leader = _leader_pid(store)
    died = time.time()
    os.kill(leader, signal.SIGKILL)
    fired = _first_run_created_after(store, died)
    print(f"\n{label}: leader killed, next tick fired {fired - died:.2f} s later (TTL {TTL} s)")
    return leader


def _pause_leader(store: Store, label: str) -> None:
    """SIGSTOP the leader until another leads, then SIGCONT it: it must not double a tick."""
    leader = _leader_pid(store)
    os.kill(leader, signal.SIGSTOP)
    try:
        stopped = time.time()
        _leader_pid(store, other_than=leader)
        print(f"{label}: leader paused, another took over {time.time() - stopped:.2f} s later")
        _more_ticks(store, 2, "ticks from the new leader")
    finally:
        os.kill(leader, signal.SIGCONT)


def _start(cli: Cli, n: int) -> list[subprocess.Popen[bytes]]:
    (cli.cwd / "wf").mkdir()
    (cli.cwd / "wf" / "tick.yaml").write_text(SCHEDULE)
    return [cli.start("scheduler", "--workflows", "wf", "--lease-ttl", TTL) for _ in range(n)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _scenario(cli: Cli, store: Store, n: int, *, pause: bool, label: str) -> None:
    procs = _start(cli, n)
    try:
        wait_for(lambda: len(_ticks(store)) >= 3, timeout=30, what="first ticks")
        _kill_leader(store, label)
        _more_ticks(store, 2, "ticks after the takeover")
        if pause:
            _pause_leader(store, label)
            _more_ticks(store, 3, "ticks after the paused leader resumed")
    finally:
        _stop(procs)
    ticks = _ticks(store)
    _check_exactly_once(ticks)
    print(f"{label}: {len(ticks)} ticks, each exactly once")


@pytest.mark.timeout(90)
def test_cron_ha_etcd_three_schedulers_leader_killed_and_paused(
    tmp_path: Path, etcd_server: Any
) -> None:
    url = f"{etcd_server.url}/cron-ha-{uuid.uuid4().hex[:8]}/"
    store = open_store(url)
    try:
        _scenario(Cli(tmp_path, store=url), store, 3, pause=True, label="cron HA etcd x3")
    finally:
        store.close()


@pytest.mark.timeout(90)
def test_cron_ha_sqlite_two_schedulers_leader_killed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    try:
        _scenario(Cli(tmp_path, store=url), store, 2, pause=False, label="cron HA sqlite x2")
    finally:
        store.close()
