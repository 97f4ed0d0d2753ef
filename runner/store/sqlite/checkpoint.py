"""WAL checkpoints off the commit path: a background thread with its own connection.

SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold (1,000 pages),
and with `synchronous=NORMAL` a checkpoint is where the fsyncs happen, so that commit is slow
with the store's lock held (docs/PERFORMANCE.md). A store object instead turns the automatic
checkpoint off on its own connection and asks this thread for a PASSIVE checkpoint (it never
blocks writers or readers) after each `EVERY` writes; what SQLite does when the last
connection closes (a final checkpoint) is unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator

from runner import errors, interrupts

logger = logging.getLogger(__name__)

EVERY = 64  # write transactions between checkpoint requests


class Checkpointer:
    """Checkpoints `path`'s WAL in a daemon thread when `wrote()` has been called often enough."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writes = 0
        self._wanted = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """One more write transaction committed (called under the store's lock)."""
        self._writes += 1
        if self._writes < EVERY:
            return
        self._writes = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
            self._thread.start()
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread (after a checkpoint it may be running)."""
        self._stop = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stop:
                    return
                try:
                    if db is None:
                        db = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the next commit's request tries again
                    logger.debug("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()


class WriterLock:
    """Queue the writers of one store file on an flock of `<file>-lock`: a writer that finds
    it taken retries after 50 µs, doubling up to 1 ms, instead of napping in SQLite's busy
    handler (1, 2, 5, 10 ... ms: with several worker processes, most of their time). Like
    SQLite's busy timeout, it gives up after `timeout` seconds (a holder stopped with SIGSTOP
    must not hang every other process); the kernel drops the lock of a process that dies."""

    def __init__(self, path: str, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        with contextlib.suppress(OSError):  # unwritable folder: SQLite's own locking alone
            self._fd = os.open(path + "-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def held(self, write: bool) -> Iterator[None]:
        fd = self._fd if write else None
        if fd is not None:
            self._acquire(fd)
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int) -> None:
        pause, deadline = 0.00005, time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise errors.StoreUnavailable(
                        f"store {self.path}: another process held its write lock for "
                        f"{self.timeout:.0f} s; try again"
                    ) from None
            interrupts.checkpoint()  # a Ctrl-C deferred by the transaction need not wait
            time.sleep(pause)  # a backoff between attempts, like SQLite's busy handler
            pause = min(pause * 2, 0.001)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
