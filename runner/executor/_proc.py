"""Run one `run`/`args` attempt as a process group: spawn, stream output, time out, kill."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from runner import models
from runner.executor._contain import Cgroup
from runner.executor._log import LogSink
from runner.executor._spawn import Child

POLL = 0.1  # how often a waiting attempt looks at its `cancel` event
REGISTER_AFTER = 0.05  # a group is reported to the reaper once it has run this long
DRAIN = 2.0  # how long output is still read after the whole group is gone
_READ = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Ending:
    """How a process (or call) ended, before outputs are read."""

    exit_code: int | None
    reason: models.Reason
    error: str | None


@dataclass(slots=True, kw_only=True, eq=False)
class Stopper:
    """When and why to stop an attempt: its deadline, its cancel event, and `kill_all`."""

    cancel: threading.Event
    deadline: float | None  # time.monotonic() value
    timeout: float | None
    killed: threading.Event  # set by kill_all
    pgid: int | None = None  # the group to kill, once started

    def due(self, now: float) -> models.Reason | None:
        """The reason to stop now, if any."""
        if self.cancel.is_set() or self.killed.is_set():
            return models.Reason.CANCELLED
        if self.deadline is not None and now >= self.deadline:
            return models.Reason.TIMEOUT
        return None

    def wait_for(self, now: float) -> float:
        """How long the next wait may block before `due` must be asked again."""
        if self.deadline is None:
            return POLL
        return max(0.0, min(POLL, self.deadline - now))

    def message(self, reason: models.Reason) -> str:
        if reason is models.Reason.TIMEOUT:
            return f"timed out after {self.timeout:g}s"
        return "killed: executor stopped" if self.killed.is_set() else "cancelled"


class Escalation:
    """Stopping one process group: SIGTERM (SIGKILL after `kill_all`), SIGKILL after `grace`."""

    def __init__(self, stopper: Stopper, sink: LogSink, *, grace: float, pgid: int) -> None:
        self.stopper = stopper
        self.reason = models.Reason.EXIT  # EXIT while not stopping
        self._sink = sink
        self._grace = grace
        self._pgid = pgid
        self._kill_at: float | None = None

    def check(self, now: float) -> None:
        """Start or escalate stopping when due."""
        if self.reason is models.Reason.EXIT:
            reason = self.stopper.due(now)
            if reason is None:
                return
            self.reason = reason
            if self.stopper.killed.is_set():
                kill_group(self._pgid, signal.SIGKILL)
                return
            self._sink.note(f"{self.stopper.message(reason)}: SIGTERM to the process group")
            kill_group(self._pgid, signal.SIGTERM)
            self._kill_at = now + self._grace
        elif self._kill_at is not None and now >= self._kill_at:
            self._sink.note(f"still running {self._grace:g}s after SIGTERM: SIGKILL")
            kill_group(self._pgid, signal.SIGKILL)
            self._kill_at = None

    def wait_for(self, now: float) -> float | None:
        """How long the next wait may block (None: until something happens)."""
        if self.reason is models.Reason.EXIT:
            return self.stopper.wait_for(now)
        return None if self._kill_at is None else max(0.0, self._kill_at - now)

    def ending(self, code: int | None) -> Ending:
        """How the attempt ended, given the process's return code."""
        if self.reason is models.Reason.EXIT and self.stopper.killed.is_set():
            self.reason = models.Reason.CANCELLED  # kill_all got there before `check`
        if self.reason is models.Reason.EXIT:
            error = describe_status(code) if code is not None else "no exit status"
            return Ending(exit_code=code, reason=self.reason, error=error)
        return Ending(exit_code=code, reason=self.reason, error=self.stopper.message(self.reason))


def describe_status(code: int) -> str | None:
    """The one-line error for a Popen return code (None for success)."""
    if code == 0:
        return None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def kill_group(pgid: int, signum: int) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class Supervisor:
    """Streams a process group's output into a sink until the leader exits, and stops it on
    timeout, cancel or `kill_all` (see `Escalation`).

    The leader is watched with a pidfd and stays an unreaped zombie until what remains of its
    group (and of its cgroup, when it has one) has been killed, so its group id cannot be taken
    by another process meanwhile.
    """

    def __init__(
        self,
        proc: Child,
        sink: LogSink,
        *,
        stopper: Stopper,
        grace: float,
        on_start: Callable[[int], None],
        on_exit: Callable[[int], None],
        cgroup: Cgroup | None = None,
    ) -> None:
        self._proc = proc
        self._cgroup = cgroup
        self._out = proc.out
        self._sink = sink
        self._on_start = on_start
        self._on_exit = on_exit
        self._register_at: float | None = time.monotonic() + REGISTER_AFTER
        self._stop = Escalation(stopper, sink, grace=grace, pgid=proc.pid)

    def run(self) -> Ending:
        """Block until the attempt is over; reap it and say how it ended."""
        pid = self._proc.pid
        pidfd = os.pidfd_open(pid)
        try:
            open_fds = self._pump([self._out, pidfd], pidfd)
        finally:
            os.close(pidfd)
        kill_group(pid, signal.SIGKILL)  # what is left of the group once the leader is gone
        if self._cgroup is not None:  # and whatever left the group (setsid, double fork)
            self._cgroup.clear()
        if self._register_at is None:
            self._on_exit(pid)
        if self._out in open_fds:
            self._drain(time.monotonic() + DRAIN)
        self._proc.close_out()
        return self._stop.ending(self._proc.wait())

    def _pump(self, fds: list[int], pidfd: int) -> list[int]:
        """Copy output and watch the stop conditions until the leader has exited."""
        while True:
            now = time.monotonic()
            self._stop.check(now)
            if self._register_at is not None and now >= self._register_at:
                # Short tasks never cost the reaper anything: until now, the tag sweep
                # (RUNNER_REAPER_TAG in their environment) covers them.
                self._on_start(self._proc.pid)
                self._register_at = None
            ready, _, _ = select.select(fds, [], [], self._stop.wait_for(now))
            if self._out in ready and not self._read():
                fds.remove(self._out)
            if pidfd in ready:
                return fds

    def _read(self) -> bool:
        data = os.read(self._out, _READ)
        self._sink.write(data)
        return bool(data)

    def _drain(self, until: float) -> None:
        """Read what the dead group left in the pipe; stop at EOF or when a process outside the
        group keeps the pipe open past `until`."""
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self._out], [], [], left)
            if ready and not self._read():
                return
        self._sink.note("output pipe still held open by a process outside the task's group")
