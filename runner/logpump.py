"""Stream the logs of long-running attempts into the store while they run (`runner logs -f`).

The executor writes each attempt's full log to the worker's log folder. Every `interval` seconds
the pump sends what was added since its last look, whole lines only, with `Store.append_log`
(fenced by the attempt's token; the store keeps the last `log_limit` bytes). An attempt shorter
than one interval is never pumped: its whole tail goes with `finish`, as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from runner import errors
from runner.models import Lease, TaskKey
from runner.store.base import Store

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024  # at most this much per attempt and look


@dataclass(slots=True)
class _Entry:
    lease: Lease
    path: str
    offset: int = 0  # bytes of the file already sent
    live: bool = True  # False once the attempt ended or its lease was lost
    lock: threading.Lock = field(default_factory=threading.Lock)  # one pump or remove at a time


class LogPump:
    """One thread per worker; `add` an attempt when it starts, `remove` it when it ends."""

    def __init__(self, store: Store, *, limit: int, interval: float = 1.0) -> None:
        self.store = store
        self.limit = limit
        self.interval = interval
        self._entries: dict[TaskKey, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-pump", daemon=True)
        self._thread.start()

    def add(self, lease: Lease, path: str) -> None:
        with self._lock:
            self._entries[lease.key] = _Entry(lease=lease, path=path)

    def remove(self, lease: Lease) -> str | None:
        """Stop pumping the attempt; the part of its log not sent yet (its last `limit` bytes),
        or None when nothing was ever sent (the caller sends the executor's tail)."""
        with self._lock:
            entry = self._entries.pop(lease.key, None)
        if entry is None:
            return None
        with entry.lock:
            entry.live = False
            if entry.offset == 0:
                return None
            return _read(entry.path, entry.offset, self.limit)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                entries = list(self._entries.values())
            for entry in entries:
                self._pump(entry)

    def _pump(self, entry: _Entry) -> None:
        with entry.lock:
            if entry.live:
                self._send_new(entry)

    def _send_new(self, entry: _Entry) -> None:
        try:
            with open(entry.path, "rb") as f:
                f.seek(entry.offset)
                data = f.read(_CHUNK)
        except OSError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        if not whole:
            return
        try:
            self.store.append_log(entry.lease, whole.decode(errors="replace"))
        except errors.LeaseLost:
            entry.live = False
            return
        except errors.StoreError as exc:
            logger.warning("could not stream the log of %s: %s", entry.lease.task_id, exc)
            return
        entry.offset += len(whole)


def _read(path: str, offset: int, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            start = max(offset, f.tell() - limit)
            f.seek(start)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
