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
then (GUARANTEES G5), forgets them and keeps serving. It runs as a plain script
(`python -I -S reaper.py`), so it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
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

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._broken = False

    def start(self) -> None:
        """Start the reaper process (once)."""
        env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(os.getpid()), self.tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # keep terminal signals (Ctrl-C) away from it
            env=env,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()

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


class _WorkerGone(Exception):
    pass


def _set_pdeathsig(signum: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pipe's EOF will do
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def _read_groups(groups: set[int], worker_pid: int, tag: str) -> None:
    """Track `+PGID`/`-PGID` lines until EOF or the worker's death."""

    def on_term(_signum: int, _frame: object) -> None:
        # The parent-death signal also fires when the worker *thread* that started us exits;
        # only a changed parent means the worker itself is gone.
        if os.getppid() != worker_pid:
            raise _WorkerGone

    signal.signal(signal.SIGTERM, on_term)
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != worker_pid:
        return
    state = _State(groups=groups, tag=tag)
    with contextlib.suppress(_WorkerGone):
        while _serve_once(state):
            pass


class _State:
    def __init__(self, *, groups: set[int], tag: str) -> None:
        self.groups = groups
        self.tag = tag
        self.deadline: float | None = None
        self.pending = b""


def _serve_once(state: _State) -> bool:
    """Handle one chunk of messages or a passed deadline; False at EOF."""
    timeout = None if state.deadline is None else max(0.0, state.deadline - time.monotonic())
    ready, _, _ = select.select([0], [], [], timeout)
    if not ready:
        reap(state.groups, state.tag)  # the worker missed its own deadline: fence for it
        state.groups.clear()
        state.deadline = None
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


def reap(groups: set[int], tag: str) -> int:
    """Kill the groups, then tagged processes until none is left; return how many were hit."""
    hit = 0
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
            hit += 1
    if not os.path.isdir("/proc"):
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


def main(argv: list[str]) -> int:
    """Reaper entry point: `reaper.py WORKER_PID TAG`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_pid, tag = int(argv[1]), argv[2]
    groups: set[int] = set()
    try:
        _read_groups(groups, worker_pid, tag)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reap(groups, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
