"""The SQLite store object's liveness observer (runner.store.liveness), fed from its own
transactions: which workers are dead by this process's monotonic clock, and how far the live
workers' clocks are from ours (logged once per change, recorded with our heartbeat)."""

from __future__ import annotations

import logging
import sqlite3
import time

from runner.store import liveness
from runner.store.sqlite import workers

logger = logging.getLogger(__name__)

REFRESH = 0.5  # seconds between re-reads of the worker rows by a claim or a one-shot write


class Clocks:
    """Call `refresh` and the writers inside the store's transactions (under its lock); the
    offsets `ahead` and `behind` are plain floats any thread may read."""

    def __init__(self) -> None:
        self.observer = liveness.Observer()
        self.ahead = 0.0  # offset to the latest live clock that disagrees with ours (>= 0)
        self.behind = 0.0  # offset to the earliest (<= 0)
        self._read_at: float | None = None
        self._skew: float | None = None

    def refresh(self, db: sqlite3.Connection, *, now: float, force: bool = False) -> None:
        """Read the worker rows again unless they were read less than REFRESH ago."""
        mono = time.monotonic()
        if not force and self._read_at is not None and mono - self._read_at < REFRESH:
            return
        self.observer.observe(workers.beats(db), now=now)
        self._read_at = mono
        self.ahead, self.behind = self.observer.latest(), self.observer.earliest()

    def expired(self, worker_id: str) -> bool:
        """Whether this process saw the worker's heartbeat unchanged for its ttl."""
        return self.observer.dead(worker_id)

    def skew(self, worker_id: str) -> float | None:
        """Our clock's distance from the other live workers' (for our heartbeat row); logs
        when it goes beyond the bound, changes by more than it, or comes back."""
        skew = self.observer.skew()
        old = self._skew
        if skew is not None and (old is None or abs(skew - old) > liveness.SKEW_BOUND):
            logger.warning(
                "worker %s: this process's clock is %+.1f s off other live workers' (bound"
                " %.1f s); liveness is judged by elapsed time only, deadlines and backoffs by"
                " the earliest clock (docs/RELIABILITY.md)",
                worker_id,
                skew,
                liveness.SKEW_BOUND,
                extra={"action": "clock_skew", "worker": worker_id, "skew": skew},
            )
        elif skew is None and old is not None:
            logger.info("worker %s: clock agrees with the other live workers again", worker_id)
        if skew is None or old is None or abs(skew - old) > liveness.SKEW_BOUND:
            self._skew = skew
        return skew
