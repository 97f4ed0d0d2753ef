"""The reaper: a small process that kills every task process group when its worker dies, or
when the worker's self-fencing deadline passes while the worker cannot act (it is paused).

The executor starts one per worker (`Reaper.start`) and reports each task's process group on
its stdin (`+PGID` / `-PGID` lines). When the worker dies, even by kill -9, the pipe reaches
EOF (and, as a second signal, the reaper's parent-death signal fires): the reaper then kills
every registered group with SIGKILL, sweeps /proc for any process still carrying the
executor's tag in its environment (a task that left its group, or one started between spawn
and registration), and exits. The worker also sends its self-fencing deadline (`D<monotonic>`
after every answered heartbeat); if that passes without a newer one, the worker is stopped or
hung, its lease may be gone, and another worker may take its tasks over: the reaper kills them
then (docs/GUARANTEES.md, G5), forgets them and keeps serving. It runs as a plain script
(`python -I -S reaper.py`), so it imports only the standard library.

Its shutdown is signal-safe: the SIGTERM handler only sets a flag (a wakeup pipe wakes `select`),
so the kill runs whether the parent-death signal lands before, during or after it. The failpoint
`reaper.shutdown` (RUNNER_FAILPOINTS, passed on by the executor) sits at the start of the
shutdown; `reaper.shutdown=kill(TERM)` lands the signal exactly there.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

TAG_VAR = "RUNNER_REAPER_TAG"
_PR_SET_PDEATHSIG = 1
_SWEEP_ROUNDS = 5


class Reaper:
    """The worker's side: start the reaper process and tell it about process groups."""

    def __init__(
        self, tag: str, *, failpoints: str = "", cgroups: str | None = None, scratch: str = ""
    ) -> None:
        self.tag = tag
        self._scratch = scratch  # the executor's temporary folder, removed at the end
        self._failpoints = failpoints  # `reaper.*` points, for tests
        self._cgroups = cgroups or ""  # the executor's cgroup folder, if it has one
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._broken = False

    def start(self) -> int:
        """Start the reaper process (once); return its pid."""
        env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
        self._proc = subprocess.Popen(
            [
                *(sys.executable, "-I", "-S", __file__),
                *(str(os.getpid()), self.tag, self._failpoints, self._cgroups, self._scratch),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # keep terminal signals (Ctrl-C) away from it
            env=env,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        return self._proc.pid

    def register(self, pgid: int) -> None:
        """The reaper kills this process group if the worker dies."""
        self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        """The group is gone (or about to be reaped): forget it."""
        self._send(b"-%d\n" % pgid)

    def set_deadline(self, deadline: float | None) -> None:
        """Kill every registered group at this `time.monotonic()` value unless a later deadline
        arrives first; None: no deadline."""
        self._send(b"D-\n" if deadline is None else b"D%.6f\n" % deadline)

    def close(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop the reaper: it sweeps for leftover tagged processes and exits. Without `wait`
        this returns at once and the reaper sweeps on its own (as when the worker dies)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if not wait:
            proc.returncode = 0  # not ours to reap any more: no ResourceWarning at exit
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _send(self, line: bytes) -> None:
        # Lines are shorter than PIPE_BUF, so concurrent writes from slot threads never mix.
        if self._broken or self._fd < 0:
            return
        try:
            os.write(self._fd, line)
        except OSError as exc:
            with self._lock:
                if not self._broken:
                    self._broken = True
                    logger.error("reaper gone (%s): tasks may outlive a killed worker", exc)


# --------------------------------------------------------------------------- the reaper process


def _set_pdeathsig(signum: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pipe's EOF will do
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


class _State:
    def __init__(self, *, worker_pid: int, tag: str, cgroups: str) -> None:
        self.worker_pid = worker_pid
        self.groups: set[int] = set()
        self.tag = tag
        self.cgroups = cgroups  # the executor's cgroup folder, or ""
        self.deadline: float | None = None
        self.pending = b""
        self.gone = False  # set by the SIGTERM handler: the worker itself is dead
        self.wakeup = -1  # read end of the signal wakeup pipe


def _watch_worker(state: _State) -> None:
    """Learn of the worker's death by SIGTERM as well as by EOF, signal-safely: the handler
    only sets a flag (the wakeup pipe wakes `select`), it never raises, so no signal can cut
    the shutdown's cleanup short wherever it lands (issue: the "undead task" race)."""

    def on_term(_signum: int, _frame: object) -> None:
        # The parent-death signal also fires when the worker *thread* that started us exits;
        # only a changed parent means the worker itself is gone.
        if os.getppid() != state.worker_pid:
            state.gone = True

    read, write = os.pipe()
    for fd in (read, write):
        os.set_blocking(fd, False)
    state.wakeup = read
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_term)
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != state.worker_pid:
        state.gone = True


def _serve(state: _State) -> None:
    """Track `+PGID`/`-PGID`/`D...` lines until EOF or the worker's death."""
    while not state.gone and _serve_once(state):
        pass


def _serve_once(state: _State) -> bool:
    """Handle one chunk of messages or a passed deadline; False at EOF."""
    timeout = None if state.deadline is None else max(0.0, state.deadline - time.monotonic())
    ready, _, _ = select.select([0, state.wakeup], [], [], timeout)
    if not ready:  # the worker missed its own deadline: fence for it
        running = _attempt_cgroups(state.cgroups)  # not those of attempts started after this
        # With cgroups every process of those attempts is in one of them: no tag sweep, which
        # would also hit an attempt the worker starts while the sweep goes on.
        reap(state.groups, state.tag, sweep=not state.cgroups)
        for path in running:
            _kill_cgroups(path, remove=False)
        state.groups.clear()
        state.deadline = None
        return True
    if state.wakeup in ready:
        with contextlib.suppress(OSError):
            os.read(state.wakeup, 512)
    if 0 not in ready:
        return True
    chunk = os.read(0, 65536)
    if not chunk:
        return False
    *lines, state.pending = (state.pending + chunk).split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            state.groups.add(int(line[1:]))
        elif line[:1] == b"-":
            state.groups.discard(int(line[1:]))
        elif line[:1] == b"D":
            state.deadline = None if line[1:] == b"-" else float(line[1:])
    return True


def _tagged_pids(marker: bytes) -> list[int]:
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if marker in environ:
            found.append(int(name))
    return found


def reap(groups: set[int], tag: str, *, sweep: bool = True) -> int:
    """Kill the groups, then (`sweep`) tagged processes until none is left; return how many
    were hit."""
    hit = 0
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
            hit += 1
    if not sweep or not os.path.isdir("/proc"):
        return hit
    marker = f"\0{TAG_VAR}={tag}\0".encode()
    for _ in range(_SWEEP_ROUNDS):
        pids = _tagged_pids(marker)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                hit += 1
    return hit


def _kill_cgroups(folder: str, *, remove: bool) -> None:
    """Kill every process in the executor's cgroups (`cgroup.kill` covers the sub-cgroups),
    wait until they are empty, and remove them (see runner/executor/_contain.py, which this
    stdlib-only script cannot import)."""
    if not folder:
        return
    try:
        with open(f"{folder}/cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
    except OSError:
        return
    if not remove:  # the worker lives on and starts new attempts: do not wait for empty
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open(f"{folder}/cgroup.events", "rb") as f:
            if b"populated 0" in f.read():
                break
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):
                os.rmdir(f"{folder}/{name}")
        os.rmdir(folder)


def _attempt_cgroups(folder: str) -> list[str]:
    if not folder:
        return []
    try:
        return [f"{folder}/{name}" for name in os.listdir(folder) if name[:1] == "a"]
    except OSError:
        return []


def _failpoints(spec: str) -> dict[str, str]:
    """`name=action` items (the RUNNER_FAILPOINTS syntax of runner.failpoints, which this
    stdlib-only script cannot import; the executor passes only the `reaper.*` points)."""
    return dict(item.partition("=")[::2] for item in spec.split(",") if "=" in item)


def _hit(failpoints: dict[str, str], name: str) -> None:
    action = failpoints.get(name, "")
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("kill(") and action.endswith(")"):
        os.kill(os.getpid(), getattr(signal, f"SIG{action[5:-1]}"))
    elif action.startswith("pause(") and action.endswith(")"):
        deadline = time.monotonic() + float(action[6:-1])
        while (left := deadline - time.monotonic()) > 0:  # a signal must not cut it short
            time.sleep(left)


def main(argv: list[str]) -> int:
    """Reaper entry point: `reaper.py WORKER_PID TAG`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = _State(worker_pid=int(argv[1]), tag=argv[2], cgroups=argv[4] if len(argv) > 4 else "")
    failpoints = _failpoints(argv[3] if len(argv) > 3 else "")
    _watch_worker(state)
    try:
        _serve(state)
    finally:
        # Nothing here can be interrupted by an exception from a signal handler (see
        # `_watch_worker`): the kill below always runs once the worker is gone.
        _hit(failpoints, "reaper.shutdown")
        reap(state.groups, state.tag)
        _kill_cgroups(state.cgroups, remove=True)
        if len(argv) > 5 and os.path.basename(argv[5]).startswith("runner-outputs-"):
            shutil.rmtree(argv[5], ignore_errors=True)  # even after kill -9 of the worker
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
