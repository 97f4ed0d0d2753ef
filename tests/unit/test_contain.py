"""Containment: no process an attempt starts outlives it, however it detaches (cgroup per attempt,
child subreaper, orphans reaped). Each test ends the processes it started, even on failure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import models
from runner.executor import Executor, _contain, reaper
from tests.unit.test_executor import ENV, REPO, WORKER, pid_alive, task, wait_until, when_exists


def _escapee(pid_file: Path) -> str:
    """A script line that starts a process which double forks, calls setsid, clears its
    environment (the executor's tag) and ignores SIGTERM, then writes its pid to `pid_file`."""
    inner = (
        f"trap '' TERM; echo \\$\\$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 1000"
    )
    return f'( setsid env -i /bin/sh -c "{inner}" & ) ; '


@pytest.fixture
def cgroup_executor(tmp_path: Path) -> Iterator[Executor]:
    probe = _contain.Cgroups("probe-unit")
    enabled = probe.enabled
    probe.close()
    if not enabled:
        pytest.skip("no writable cgroup v2 here (fallback: process group + tag sweep)")
    ex = Executor(slots=2, log_dir=str(tmp_path / "logs"), log_limit=4096, grace=0.5)
    yield ex
    ex.close()


@contextlib.contextmanager
def _ended_after(pid_file: Path) -> Iterator[None]:
    """On the way out, kill the escaped process if a test failed to end it."""
    try:
        yield
    finally:
        if pid_file.exists():
            with contextlib.suppress(OSError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Dead and reaped: no /proc entry at all (a zombie would still have one)."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("kind", ["run", "args"])
@pytest.mark.parametrize("end", ["exit", "timeout", "cancel"])
def test_contain_escaped_descendant_ends_with_its_attempt(
    cgroup_executor: Executor, tmp_path: Path, end: str, kind: str
) -> None:
    esc = tmp_path / "esc"
    script = _escapee(esc) + f"while [ ! -e {esc} ]; do sleep 0.01; done; "
    script += "exit 0" if end == "exit" else "sleep 1000"
    cancel = threading.Event()
    if end == "cancel":
        when_exists(esc, cancel.set)
    with _ended_after(esc):
        spec = task(run=script) if kind == "run" else task(args=["sh", "-c", script])
        result = cgroup_executor.run(
            spec,
            env=ENV,
            log_name="r/t/1",
            cancel=cancel,
            timeout=2.0 if end == "timeout" else None,
        )
        expected = {"exit": models.Reason.EXIT, "timeout": models.Reason.TIMEOUT}
        assert result.reason is expected.get(end, models.Reason.CANCELLED)
        pid = int(esc.read_text())
        wait_until(lambda: not pid_alive(pid), timeout=10)
        wait_until(lambda: _gone(pid), timeout=10)  # killed *and* reaped (it came back here)


def test_contain_escaped_descendant_dies_with_a_killed_worker(tmp_path: Path) -> None:
    probe = _contain.Cgroups("probe-kill9")
    if not probe.enabled:
        pytest.skip("no writable cgroup v2 here (fallback: process group + tag sweep)")
    probe.close()
    esc = tmp_path / "esc"
    script = _escapee(esc) + "sleep 1000"
    with _ended_after(esc):
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER.format(), str(tmp_path), "run", script, ""], cwd=REPO
        )
        try:
            wait_until(esc.exists)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        pid = int(esc.read_text())
        wait_until(lambda: not pid_alive(pid), timeout=10)


def test_contain_executor_reuses_empty_cgroups_and_leaves_none_behind(tmp_path: Path) -> None:
    """An attempt's cgroup, empty at its end, serves the next attempt; one that a process
    outlived is killed and removed, never reused; closing removes them all."""
    ex = Executor(slots=1, log_dir=str(tmp_path / "logs"), log_limit=4096)
    folder = ex._cgroups.folder
    if folder is None:
        ex.close()
        pytest.skip("no writable cgroup v2 here")

    def cgroups() -> list[str]:
        return sorted(p for p in os.listdir(folder) if os.path.isdir(f"{folder}/{p}"))

    def procs(name: str) -> str:
        return Path(f"{folder}/{name}/cgroup.procs").read_text()

    for i in range(3):
        result = ex.run(task(run="echo hi"), env=ENV, log_name=f"r/t/{i}", cancel=threading.Event())
        assert result.succeeded
        assert len(cgroups()) == 1
        assert procs(cgroups()[0]) == ""
    first = cgroups()[0]
    escaped = ex.run(
        task(run="setsid sleep 300 >/dev/null 2>&1 & echo $! >&2"),
        env=ENV,
        log_name="r/t/esc",
        cancel=threading.Event(),
    )
    assert escaped.succeeded
    pid = int(escaped.log_tail.split()[-1])
    wait_until(lambda: not pid_alive(pid), timeout=10)  # killed with its attempt's cgroup
    assert cgroups() == [first]
    assert procs(first) == ""
    ex.close()
    assert not os.path.exists(folder)


def test_contain_a_cgroup_released_with_a_process_in_it_is_killed_and_removed() -> None:
    groups = _contain.Cgroups(f"test{os.getpid()}")
    if not groups.enabled:
        pytest.skip("no writable cgroup v2 here")
    try:
        cgroup = groups.new()
        assert cgroup is not None
        sleeper = subprocess.Popen(["sleep", "300"])
        assert cgroup.add(sleeper.pid)
        groups.release(cgroup)
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not os.path.exists(cgroup.path)
        again = groups.new()
        assert again is not None
        assert again.path != cgroup.path
        assert again.empty()
    finally:
        groups.close()


def test_contain_closing_while_the_reaper_removes_the_folder_does_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Executor.close(wait=False)` (runner apply's local workers) closes the reaper's pipe,
    and the reaper kills and removes the executor's cgroup folder while `Cgroups.close` does
    the same: a folder removed between the open of its cgroup.events and the read answers
    ENODEV, which made `runner apply` exit 70 after its run had succeeded (2 in 210 applies on
    etcd under CPU load). The reaper's removal is injected at that point: gone is empty."""
    groups = _contain.Cgroups(f"test{os.getpid()}")
    folder = groups.folder
    if folder is None:
        pytest.skip("no writable cgroup v2 here")
    try:
        cgroup = groups.new()  # an attempt's cgroup, left empty for the next one
        assert cgroup is not None
        groups.release(cgroup)
        events = f"{folder}/cgroup.events"
        real_pread = os.pread
        removed: list[str] = []

        def pread(fd: int, n: int, offset: int) -> bytes:
            if not removed and os.readlink(f"/proc/self/fd/{fd}") == events:
                reaper._kill_cgroups(folder, remove=True)  # the reaper's teardown, at EOF
                removed.append(folder)
            return real_pread(fd, n, offset)

        monkeypatch.setattr(os, "pread", pread)
        groups.close()
        assert removed == [folder]
        assert not os.path.exists(folder)
    finally:
        monkeypatch.undo()
        _contain.remove_folder(folder)


def test_contain_orphans_reaps_dead_children_it_did_not_start_as_pid1() -> None:
    """As a container's PID 1 every orphan becomes runner's child: the dead ones are reaped,
    the executor's own children (registered while spawning) are left to their owners."""
    orphans = _contain.Orphans(folder=None, reap_all=True, interval=3600)
    try:
        with orphans.spawning() as known:
            mine = subprocess.Popen(["true"])
            known.add(mine.pid)
        stray = subprocess.Popen(["true"])  # stands for an orphan re-parented to PID 1
        wait_until(lambda: _state(stray.pid) == "Z" and _state(mine.pid) == "Z")
        assert orphans.reap_all() >= 1
        assert _gone(stray.pid)
        assert _state(mine.pid) == "Z"  # untouched: its owner waits for it
        assert mine.wait() == 0
    finally:
        orphans.close()
        with contextlib.suppress(ChildProcessError):
            stray.wait()


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_contain_fallback_is_reported_without_cgroup(tmp_path: Path) -> None:
    ex = Executor(slots=1, log_dir=str(tmp_path / "logs"), log_limit=4096, contain=False)
    try:
        assert ex._cgroups.folder is None
        result = ex.run(task(run="echo hi"), env=ENV, log_name="r/t/1", cancel=threading.Event())
        assert result.succeeded
    finally:
        ex.close()


def test_contain_killed_worker_leaves_no_scratch_folder(tmp_path: Path) -> None:
    """kill -9 of the worker used to leave an empty runner-outputs-* folder behind each time."""
    ready = tmp_path / "ready"
    script = f"echo $$ > {ready}.tmp && mv {ready}.tmp {ready}; sleep 1000"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(), str(tmp_path), "run", script, ""], cwd=REPO
    )
    try:
        wait_until(ready.exists)
        temp = Path(tempfile.gettempdir())
        mine = list(temp.glob(f"runner-outputs-{worker.pid}-*"))
        assert len(mine) == 1
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    wait_until(lambda: not mine[0].exists(), timeout=10)
    wait_until(lambda: not pid_alive(int(ready.read_text())), timeout=10)


PID1 = """
import json, os, sys, threading, time
from runner import models
from runner.executor import Executor
assert os.getpid() == 1
ex = Executor(slots=2, log_dir=sys.argv[1], log_limit=1000, contain=sys.argv[2] == "1")
script = "(sleep 0.2 &); (setsid sh -c 'sleep 0.3' &); sleep 1000 & exit 3"
spec = models.TaskSpec(id="t", name="t", kind=models.Kind.RUN, run=script)
codes = [ex.run(spec, env={}, log_name=f"r/{i}", cancel=threading.Event()).exit_code
         for i in range(3)]
def others():  # every process of the namespace but this one and the executor's reaper
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1":
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"reaper" in f.read():
                    continue
            with open(f"/proc/{name}/stat") as f:
                found.append([int(name), f.read().rsplit(")", 1)[1].split()[0]])
        except OSError:
            pass
    return found
# Wait until the escaped `sleep 0.3`s end too: an orphan that dies later turns into a zombie
# then, and only a zombie left once everything else is gone is one runner did not reap.
deadline = time.monotonic() + 10
while others() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"codes": codes, "left": others()}))
ex.close()
"""


@pytest.mark.parametrize("contain", ["1", "0"], ids=["cgroup", "no-cgroup"])
def test_contain_as_pid1_leaves_no_zombie(tmp_path: Path, contain: str) -> None:
    """runner as a container's init (PID 1 of a PID namespace): orphans of tasks, killed or
    ended on their own, are reaped; the tasks' own exit codes are still right."""
    probe = subprocess.run(
        ["unshare", "-fp", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("cannot make a PID namespace here (unshare needs privileges)")
    res = subprocess.run(
        ["unshare", "-fp", "--mount-proc", sys.executable, "-c", PID1, str(tmp_path), contain],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    # left: [pid, state] of what still exists ("Z": a zombie nobody reaped)
    assert json.loads(res.stdout.splitlines()[-1]) == {"codes": [3, 3, 3], "left": []}


@pytest.mark.parametrize("end", ["cancel", "return"])
def test_contain_escaped_descendant_of_a_call_ends_with_it(
    cgroup_executor: Executor, tmp_path: Path, end: str
) -> None:
    esc = tmp_path / "esc"
    cancel = threading.Event()
    when_exists(esc, cancel.set)
    with _ended_after(esc):
        with_ = {"pid_file": str(esc), "seconds": 1000.0 if end == "cancel" else 0.0}
        spec = task(call="tests.callables:escape_then_sleep", with_=with_)
        result = cgroup_executor.run(spec, env=ENV, log_name="r/t/1", cancel=cancel)
        expected = models.Reason.CANCELLED if end == "cancel" else models.Reason.EXIT
        assert result.reason is expected
        wait_until(esc.exists)
        pid = int(esc.read_text())
        wait_until(lambda: not pid_alive(pid), timeout=10)
