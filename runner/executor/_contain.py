"""Keeping every process an attempt starts within reach: a cgroup v2 per attempt, the child
subreaper, and reaping the orphans that come back (docs/SECURITY.md, "Containment").

A process group alone does not hold a task: a descendant can `setsid()` (or double fork) out of
it, clear its environment (the executor's tag) and ignore SIGTERM. Where the machine offers a
writable cgroup v2, each attempt's leader joins a cgroup of its own before it runs any of the
task's code (`JOIN`), and the attempt's end kills the whole cgroup (`cgroup.kill`), whatever a
process did to its session, group or environment. The executor's cgroups live in one folder,
`<this process's cgroup>/runner-<tag>`, that the reaper process kills as a whole when the
worker dies. The process then also becomes a child subreaper, so a descendant whose parent
exits is re-parented to it (not to init) and reaped by `Orphans` once dead. Where there is no
such cgroup (read-only /sys/fs/cgroup, cgroup v1 only, not Linux, Linux < 5.14),
`Cgroups.enabled` is False and the executor keeps its process-group and tag-sweep guarantees.

`Orphans` also reaps, when this process is PID 1 (a container's init), every dead child that
the executor did not start itself, so no zombie piles up.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import shlex
import signal
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_EMPTY_WAIT = 2.0  # how long a killed cgroup may take to empty before it is left behind
FOLDER_PREFIX = "runner-"


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux 3.4+); False where it cannot be."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def own_cgroup() -> str | None:
    """The folder of this process's cgroup v2, or None when there is no cgroup2 mount."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            rel = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    if rel is None:
        return None
    for fields in mounts:
        sep = fields.index("-") if "-" in fields else -1
        if sep > 0 and fields[sep + 1] == "cgroup2":
            path = os.path.join(fields[4], rel.lstrip("/")).rstrip("/")
            if os.path.isdir(path):
                return path
    return None


# A leader joins its cgroup itself, before it runs any of the task's code: moving it from the
# worker after the spawn left a window (up to a grace period of the kernel's RCU, ~10 ms when
# cgroups have been idle) in which a task could fork out of reach. `sh` is the smallest program
# that can write to a file and then exec; it costs one more exec per attempt.
JOIN = (
    'echo 0 2>/dev/null >"$0" || echo "[runner] cannot join cgroup $0: running uncontained" >&2; '
    'exec "$@"'
)


class Cgroup:
    """One attempt's cgroup (or a call child's)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs = f"{path}/cgroup.procs"
        self._removed = False
        self.cleared = False  # `clear` found it empty, or left it so
        self._events = -1  # cgroup.events, opened by the first `empty`

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` started so that it joins this cgroup before it runs (see JOIN). A script for
        the default shell gets the join in front, on its first line (one exec, not two)."""
        if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
            return [
                "/bin/sh",
                "-c",
                f"echo 0 2>/dev/null >{shlex.quote(self.procs)} || :; {argv[2]}",
            ]
        return ["/bin/sh", "-c", JOIN, self.procs, *argv]

    def add(self, pid: int) -> bool:
        """Move `pid` and the descendants it has made so far in; False if the kernel refused."""
        try:
            fd = os.open(self.procs, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            logger.warning("cannot move process %d into cgroup %s: %s", pid, self.path, exc)
            return False
        try:
            for each in _tree(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.write(fd, str(each).encode())
        except OSError as exc:
            logger.warning("cannot move process %d into cgroup %s: %s", pid, self.path, exc)
            return False
        finally:
            os.close(fd)
        return True

    def kill_others(self, keep: int) -> int:
        """SIGKILL every process in the cgroup but `keep` (a call child between calls: what a
        finished call started); a few rounds catch what forked meanwhile. Returns how many."""
        hit = 0
        for _ in range(5):
            try:
                with open(self.procs, encoding="ascii") as f:
                    pids = [int(p) for p in f.read().split() if int(p) != keep]
            except OSError:
                return hit
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    hit += 1
        return hit

    @property
    def removed(self) -> bool:
        return self._removed

    def empty(self) -> bool:
        """Whether no process is in the cgroup (or below it) now (cgroup.events, kept open)."""
        try:
            if self._events < 0:
                self._events = os.open(f"{self.path}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
            return b"populated 0" in os.pread(self._events, 256, 0)
        except OSError:
            return False

    def close(self) -> None:
        """Close the file `empty` keeps open."""
        if self._events >= 0:
            with contextlib.suppress(OSError):
                os.close(self._events)
            self._events = -1

    def clear(self) -> None:
        """Kill whatever is left in the cgroup (`cgroup.kill`) and wait until it is empty; the
        usual end, an empty cgroup, costs one read. Sets `cleared`: empty now."""
        self.cleared = self.empty()
        if not self.cleared:
            kill_cgroup(self.path)
            self.cleared = self.empty()

    def remove(self) -> None:
        """Kill whatever is left in the cgroup (`cgroup.kill`, then wait until it is empty) and
        remove it. An empty cgroup (the usual end) costs one rmdir."""
        if self._removed:
            return
        self._removed = True
        self.close()
        try:
            os.rmdir(self.path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # busy: processes are left in it
        kill_cgroup(self.path)
        try:
            os.rmdir(self.path)
        except OSError as exc:
            logger.warning("cannot remove cgroup %s: %s", self.path, exc)


class Cgroups:
    """The executor's cgroup folder; `new()` makes one cgroup per attempt (None when off)."""

    def __init__(self, tag: str, *, enabled: bool = True) -> None:
        self.folder: str | None = None
        self._count = 0
        self._free: list[Cgroup] = []  # empty cgroups of ended attempts, for the next ones
        self._lock = threading.Lock()
        if not enabled:
            return
        base = own_cgroup()
        if base is None:
            logger.info("no cgroup per attempt (no cgroup v2 here): process groups only")
            return
        folder = f"{base}/{FOLDER_PREFIX}{tag}"
        try:
            os.mkdir(folder, 0o755)
        except OSError as exc:
            logger.info("no cgroup per attempt (%s): process groups only", exc)
            return
        if not os.path.exists(f"{folder}/cgroup.kill"):  # Linux < 5.14: killing is racy
            logger.info("no cgroup per attempt (no cgroup.kill before Linux 5.14)")
            with contextlib.suppress(OSError):
                os.rmdir(folder)
            return
        self.folder = folder

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def new(self) -> Cgroup | None:
        """An empty cgroup for one attempt, or None (cgroups are off or failed): one an
        earlier attempt left empty (`release`), else a new one."""
        if self.folder is None:
            return None
        with self._lock:
            if self._free:
                cgroup = self._free.pop()
                cgroup.cleared = False
                return cgroup
            self._count += 1
            path = f"{self.folder}/a{self._count}"
        try:
            os.mkdir(path)
            return Cgroup(path)
        except OSError as exc:
            logger.warning("cannot create cgroup %s: %s", path, exc)
            return None

    def release(self, cgroup: Cgroup) -> None:
        """The attempt in `cgroup` is over: keep the cgroup for the next attempt when no
        process is left in it, else kill what is left and remove it (`Cgroup.remove`).
        Creating and removing a cgroup per attempt cost about a fifth of a `true` task's
        time on a 2-core machine (docs/PERFORMANCE.md, "Fast by default")."""
        if not cgroup.removed and (cgroup.cleared or cgroup.empty()):
            with self._lock:
                self._free.append(cgroup)
            return
        cgroup.remove()

    def close(self) -> None:
        """Kill everything left in the folder and remove it."""
        with self._lock:
            for cgroup in self._free:
                cgroup.close()
        if self.folder is not None:
            remove_folder(self.folder)


def kill_cgroup(path: str) -> None:
    """`cgroup.kill` the cgroup (and its sub-cgroups), then wait until it is empty."""
    try:
        with open(f"{path}/cgroup.kill", "w", encoding="ascii") as f:
            f.write("1")
    except OSError:
        return  # gone already
    _wait_empty(path, _EMPTY_WAIT)


def _wait_empty(path: str, timeout: float) -> None:
    """Wait for `populated 0` in cgroup.events (the kernel signals each change with POLLPRI).
    A cgroup removed meanwhile is empty: its open file then answers ENODEV. So it is at
    `Executor.close(wait=False)`, where the reaper removes the executor's folder while
    `Cgroups.close` waits here for the same folder (the ENODEV made `runner apply` exit 70
    after its run had succeeded)."""
    try:
        fd = os.open(f"{path}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        for _ in range(50):  # each change of the file wakes the poll: bounded either way
            try:
                events = os.pread(fd, 4096, 0)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    return  # removed: empty
                raise
            if b"populated 0" in events:
                return
            poller.poll(int(timeout * 1000 / 50))
    finally:
        os.close(fd)


def remove_folder(folder: str) -> None:
    """Kill every process under `folder` and remove it with its sub-cgroups."""
    kill_cgroup(folder)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if os.path.isdir(f"{folder}/{name}"):
                with contextlib.suppress(OSError):
                    os.rmdir(f"{folder}/{name}")
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def _tree(pid: int) -> Iterator[int]:
    """`pid` first, then its descendants (as /proc lists them now)."""
    todo = [pid]
    while todo:
        each = todo.pop()
        yield each
        todo.extend(_children(each))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


class Orphans:
    """Reaps dead children this process did not start itself: descendants of attempts that
    came back to it as their subreaper (recognised by their cgroup under `folder`) and, when
    this process is PID 1, any other. Children the executor started are registered in
    `spawning()` and never touched: their owners wait for them."""

    def __init__(
        self, *, folder: str | None, reap_all: bool | None = None, interval: float = 0.5
    ) -> None:
        self._folder = folder
        self._pid1 = os.getpid() == 1 if reap_all is None else reap_all
        self._known: set[int] = set()  # children their owners wait for
        self._inflight = 0  # spawns under way: their pids are not in `_known` yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if folder is not None or self._pid1:
            self._thread = threading.Thread(
                target=self._loop, args=(interval,), name="orphans", daemon=True
            )
            self._thread.start()

    @contextlib.contextmanager
    def spawning(self) -> Iterator[set[int]]:
        """Hold while starting a child and adding its pid to the yielded set. Spawns run side
        by side (a lock held across each fork would queue every slot's spawn behind the
        others'); no orphan is reaped while any is in flight, since a child that died before
        its pid was added would look like one."""
        with self._lock:
            self._inflight += 1
        try:
            yield self._known
        finally:
            with self._lock:
                self._inflight -= 1

    def forget(self, pid: int) -> None:
        """The owner has waited for `pid`."""
        with self._lock:
            self._known.discard(pid)

    def reap(self) -> int:
        """Reap every dead orphan now; return how many."""
        if self._thread is None:
            return 0
        dead = _any_dead_child()
        if dead is None or dead in self._known:  # a known one is its owner's to wait for;
            return 0  # others behind it wait for the next round of the thread
        return self.reap_all()

    def reap_all(self) -> int:
        """Reap every dead orphan now (a scan of this process's children); return how many."""
        reaped = 0
        with self._lock:
            if self._inflight:
                return 0  # the next round (the thread's, or the next attempt's end) reaps
            for pid in _children(os.getpid()):
                if pid not in self._known and self._dead_orphan(pid):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                        reaped += 1
        return reaped

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if _any_dead_child() is not None:
                    self.reap_all()
            except Exception:  # never let the thread die: log and go on
                logger.exception("reaping orphans failed")

    def _dead_orphan(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
            if state != b"Z":
                return False
            if self._pid1:
                return True
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
                lines = [line.strip()[3:] for line in f if line.startswith("0::")]
        except OSError:
            return False
        mine = f"/{os.path.basename(self._folder or '')}/"
        return any(mine in f"{rel}/" for rel in lines)


def _any_dead_child() -> int | None:
    """The pid of some child that is dead and not reaped yet (nothing is reaped here)."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if info is None else info.si_pid
