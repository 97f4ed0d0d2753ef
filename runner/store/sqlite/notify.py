"""Waiting for changes (`Store.wait`): commits of this object, other connections, other processes.

Other processes' commits wake a waiter through inotify on the WAL file: every commit in WAL mode
writes the `-wal` file, so an IN_MODIFY event on it means "the database may have changed". Where
inotify is unavailable (not Linux, or the watch cannot be added) `WalWatcher.wait` degrades to a
plain timed wait and the waiter polls `PRAGMA data_version`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time

from runner import interrupts
from runner.store.sqlite.db import Database, Seen

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000

# How often `wait` looks for commits of other connections (PRAGMA data_version) without inotify:
# an idle waiter stays under 1% CPU, and a change by another process is seen within ~30 ms.
POLL = 0.025
WATCHED = 0.5  # with inotify, a safety-net re-check of data_version this often
RECHECK = (0.001, 0.004, 0.015, 0.03)


class WalWatcher:
    """An inotify watch on `<db>-wal`; `wait(timeout)` returns True when it was written."""

    def __init__(self, db_path: str) -> None:
        self._fd = -1
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(db_path + "-wal"), _IN_MODIFY) < 0:
                os.close(fd)
                return
            self._fd = fd
        except (OSError, AttributeError):
            self._fd = -1

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def wait(self, timeout: float) -> bool:
        """Block until the WAL file is written or `timeout`; drains the pending events."""
        if self._fd < 0:
            return False
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Waiter:
    """`Store.wait` on one store object: one waiting thread at a time polls for other
    connections' commits (or sleeps on the WAL watch) and wakes the others."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.watcher = WalWatcher(db.path)
        self.polling = False  # a thread in wait() is polling data_version

    def wait(self, timeout: float) -> bool:
        """See SqliteStore.wait. In the main thread a Ctrl-C is acted on between the waits,
        never while `db.cond` changes hands (`runner.interrupts`): each wait is a slice.
        A thread's first wait, before any transaction of its own, returns True at once: what
        the object's other threads have read since a commit is no measure of what this one
        saw (a worker's idle thread, waiting for its claim loop, slept through a run submitted
        just before its first wait, which the heartbeat's transaction had read)."""
        db = self.db
        deadline = time.monotonic() + timeout
        with interrupts.deferred():
            seen = db.last_seen()
            if seen is None:
                db.refresh()
                db.mark_seen()
                return True
            with db.cond:
                try:
                    while (db.commits, db.version) == seen:
                        interrupts.checkpoint()
                        remaining = interrupts.bounded(deadline - time.monotonic())
                        if remaining <= 0:
                            return False
                        if self.polling:
                            db.cond.wait(remaining)  # the polling thread wakes us on a change
                        else:
                            self.poll(min(remaining, WATCHED if self.watcher.active else POLL))
                    db.mark_seen()
                    return True
                finally:
                    db.cond.notify_all()  # another waiter may take over polling

    def poll(self, interval: float) -> None:
        """Wait `interval` (or for a commit), then look for other connections' commits; the
        caller holds `db.cond`."""
        db = self.db
        before: Seen = (db.commits, db.version)
        self.polling = True
        try:
            woke = self._wait_for_wal(interval) if self.watcher.active else False
            if not self.watcher.active:
                db.cond.wait(interval)
        finally:
            self.polling = False
        changed = not db.closed and db.refresh() != before
        # A commit writes the WAL just before it becomes visible in the WAL index: after an
        # inotify wake with no visible change, look again a few times, briefly. (Commits through
        # this object count at once: data_version only moves for other connections' commits.)
        for pause in RECHECK if woke and not changed else ():
            db.cond.wait(pause)
            if db.closed or db.refresh() != before:
                changed = True
                break
        if changed:
            db.cond.notify_all()

    def _wait_for_wal(self, interval: float) -> bool:
        self.db.cond.release()  # in-process commits also write the WAL: inotify sees them
        try:
            return self.watcher.wait(interval)
        finally:
            self.db.cond.acquire()

    def close(self) -> None:
        self.watcher.close()
