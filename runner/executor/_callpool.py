"""A pool of long-lived call children (like Celery's prefork pool), one call at a time each.

Each child is `python callchild.py` in its own session, with three pipes: requests in, answers
out, and its stdout+stderr, which is streamed into the attempt's log while the call runs. A
call round trip is one pickle each way; no process is spawned per call. A timeout, cancel or
crash kills only that child; the next call starts a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner import models
from runner.executor import _contain, callchild
from runner.executor._log import LogSink
from runner.executor._proc import Ending, Escalation, Stopper, describe_status, kill_group

_CHILD = str(Path(callchild.__file__).resolve())
_READ = 256 * 1024
_EXIT_WAIT = 5.0


class CallChild:
    """The pool's handle on one child process."""

    def __init__(self, *, base_env: Mapping[str, str], cwd: str) -> None:
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, _CHILD, str(os.getpid()), str(req_r), str(resp_w), cwd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(req_r, resp_w),
                close_fds=True,
                start_new_session=True,
                env=dict(base_env),
                cwd=cwd,
            )
        except BaseException:
            for fd in (self.req_w, self.resp_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(resp_w)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.fileno()
        os.set_blocking(self.out, False)
        self.cgroup: _contain.Cgroup | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, request: tuple[str, dict[str, Any], dict[str, str], str | None]) -> None:
        callchild.write_frame(self.req_w, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    def read_output(self, sink: LogSink) -> bool:
        """Move what the child printed into the sink; False at EOF."""
        while True:
            try:
                data = os.read(self.out, _READ)
            except BlockingIOError:
                return True
            if not data:
                return False
            sink.write(data)

    def close(self) -> int:
        """Kill the child's group, reap it and close the pipes; return its status."""
        kill_group(self.pid, signal.SIGKILL)
        if self.cgroup is not None:  # and what its calls started, wherever it went
            self.cgroup.remove()
        for fd in (self.req_w, self.resp_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.wait()


class _Call:
    """One call on one child: stream its output, wait for the answer, enforce stop rules."""

    def __init__(self, child: CallChild, sink: LogSink, stop: Escalation) -> None:
        self.child = child
        self.sink = sink
        self.stop = stop

    def wait(self) -> tuple[Any, ...] | None:
        """The child's answer, or None when the child died or was stopped."""
        fds = [self.child.resp_r, self.child.out]
        while True:
            now = time.monotonic()
            self.stop.check(now)
            ready, _, _ = select.select(fds, [], [], self.stop.wait_for(now))
            if self.child.out in ready and not self.child.read_output(self.sink):
                fds.remove(self.child.out)
            if self.child.resp_r in ready:
                frame = callchild.read_frame(self.child.resp_r)
                self.child.read_output(self.sink)
                if frame is None or self.stop.reason is not models.Reason.EXIT:
                    return None
                answer: tuple[Any, ...] = pickle.loads(frame)
                return answer


def _ending(answer: tuple[Any, ...]) -> tuple[Ending, dict[str, str] | None]:
    if answer[0] == "ok":
        return Ending(exit_code=0, reason=models.Reason.EXIT, error=None), answer[1]
    if answer[0] == "exit":
        return Ending(exit_code=answer[1], reason=models.Reason.EXIT, error=answer[2]), None
    return Ending(exit_code=0, reason=models.Reason.ERROR, error=str(answer[1])), None


class CallPool:
    """Up to one idle child per slot, started on demand; busy children can be killed at once."""

    def __init__(
        self,
        *,
        size: int,
        grace: float,
        base_env: Callable[[], Mapping[str, str]],
        on_spawn: Callable[[int], None],
        on_exit: Callable[[int], None],
        cgroups: _contain.Cgroups | None = None,
        orphans: _contain.Orphans | None = None,
    ) -> None:
        self._size = size
        self._cgroups = cgroups
        self._orphans = orphans or _contain.Orphans(folder=None)
        self._grace = grace
        self._base_env = base_env
        self._on_spawn = on_spawn
        self._on_exit = on_exit
        self._idle: list[CallChild] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(
        self,
        spec: models.TaskSpec,
        *,
        env: dict[str, str],
        sink: LogSink,
        stopper: Stopper,
    ) -> tuple[Ending, dict[str, str] | None]:
        """Run `spec.call` with `spec.with_` on a child; return how it ended and its outputs."""
        child = self._acquire()
        stopper.pgid = child.pid
        stop = Escalation(stopper, sink, grace=self._grace, pgid=child.pid)
        try:
            child.send((spec.call or "", dict(spec.with_), env, spec.workdir))
            answer = _Call(child, sink, stop).wait()
        except BaseException:
            self._discard(child)
            raise
        if answer is not None:
            if child.cgroup is not None:  # the call is over: so is what it started
                child.cgroup.kill_others(child.pid)
            self._release(child)
            return _ending(answer)
        return self._failed(child, sink, stop), None

    def close(self) -> None:
        """Stop every idle child; busy ones are stopped when their call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            self._discard(child)

    def _failed(self, child: CallChild, sink: LogSink, stop: Escalation) -> Ending:
        """The child died or was stopped: replace it and say why."""
        status: int | None = None
        stopped = stop.reason is not models.Reason.EXIT or stop.stopper.killed.is_set()
        if not stopped:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = child.proc.wait(_EXIT_WAIT)
        child.read_output(sink)
        code = self._discard(child)
        if stopped:
            return stop.ending(None)
        what = describe_status(code if status is None else status) or "exited"
        sink.note(f"call child died ({what}); a new one takes its place")
        return Ending(exit_code=None, reason=models.Reason.ERROR, error=f"call child died: {what}")

    def warm(self, count: int) -> int:
        """Start idle children until `count` are idle (at most the pool's size), so the first
        calls find one ready instead of waiting for an interpreter to start (as Celery's
        prefork pool starts its children with the worker). It starts `count` at most, however
        many calls take idle children meanwhile. Returns how many it started."""
        target = min(count, self._size)
        for started in range(target):
            with self._lock:
                if self._closed or len(self._idle) >= target:
                    return started
            child = self._start_child()
            with self._lock:
                if not self._closed:
                    self._idle.append(child)
                    continue
            self._discard(child)
            return started + 1
        return target

    def _acquire(self) -> CallChild:
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                break
            if idle.proc.poll() is None:
                return idle
            self._discard(idle)  # killed while idle (a fence, the OOM killer): replace it
        return self._start_child()

    def _start_child(self) -> CallChild:
        cgroup = None if self._cgroups is None else self._cgroups.new()
        try:
            with self._orphans.spawning() as known:
                child = CallChild(base_env=self._base_env(), cwd=os.getcwd())
                known.add(child.pid)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        if cgroup is not None and cgroup.add(child.pid):
            child.cgroup = cgroup
        elif cgroup is not None:
            cgroup.remove()
        self._on_spawn(child.pid)
        return child

    def _release(self, child: CallChild) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._size:
                self._idle.append(child)
                return
        self._discard(child)

    def _discard(self, child: CallChild) -> int:
        self._on_exit(child.pid)
        code = child.close()
        self._orphans.forget(child.pid)
        return code
