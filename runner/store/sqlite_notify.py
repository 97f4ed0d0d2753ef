"""Wake on other processes' SQLite commits without polling: inotify on the WAL file.

Every commit in WAL mode writes the `-wal` file, so an IN_MODIFY event on it means "the
database may have changed". Where inotify is unavailable (not Linux, or the watch cannot be
added) `WalWatcher.wait` degrades to a plain timed wait and the caller polls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


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
