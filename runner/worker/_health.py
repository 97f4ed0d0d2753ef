"""The worker's view of the store's health: how long every write has been failing, and its
warnings about it, each repeating error logged at most once per `LOG_EVERY` seconds (a full
disk must not flood the log: docs/RELIABILITY.md)."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

LOG_EVERY = 30.0  # seconds between two warnings of one repeating store error


class StoreHealth:
    """Shared by the worker's thread roles; each reports its store calls' failures and
    successes by kind (`finish`, `heartbeat`, ...): one kind failing on (a finish that cannot
    be recorded) is not hidden by another that still gets through (an empty claim)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing_since: dict[str, float] = {}  # kind -> monotonic time of its 1st failure
        self._logged: dict[str, tuple[float, int]] = {}  # message -> (logged at, repeats since)

    def failed(self, kind: str, what: str, exc: BaseException) -> None:
        """A store call failed: warn, unless the same error was logged less than LOG_EVERY
        seconds ago (then count it, and say how often it repeated with the next warning)."""
        now = time.monotonic()
        message = f"{what}: {exc}"
        with self._lock:
            self._failing_since.setdefault(kind, now)
            logged_at, repeats = self._logged.get(message, (None, 0))
            if logged_at is not None and now - logged_at < LOG_EVERY:
                self._logged[message] = (logged_at, repeats + 1)
                return
            self._logged[message] = (now, 0)
        more = f" (and {repeats} more time(s) in the last {LOG_EVERY:.0f} s)" if repeats else ""
        logger.warning("%s%s", message, more, extra={"action": "store_error"})

    def ok(self, kind: str) -> None:
        """A store call of this kind succeeded."""
        with self._lock:
            if self._failing_since.pop(kind, None) is None:
                return
            if not self._failing_since:
                self._logged.clear()
        logger.warning("store: %s succeeds again", kind, extra={"action": "store_recovered"})

    def failing_for(self) -> float:
        """Seconds the longest failing kind of store call has been failing (0: none fails)."""
        with self._lock:
            first = min(self._failing_since.values(), default=None)
        return 0.0 if first is None else time.monotonic() - first
