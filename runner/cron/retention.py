"""Retention: the leading scheduler deletes finished runs older than a retention, hourly.

`Collector.run` is a loop of its own (the scheduler starts it in a thread), so a long gc never
delays tick firing, dispatch passes or the leadership renewals of the scheduler loop. Only the
leader collects; gc is idempotent, so a leader change in the middle of a pass is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from runner import errors
from runner.store.base import Store

logger = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = 7 * 86_400.0  # the default retention: finished runs live 7 days
GC_EVERY = 3600.0  # seconds between two collections by the leader
FIRST_AFTER = 60.0  # the first collection, once leading: soon, but not in the startup rush
STANDBY_CHECK = 60.0  # how often a standby looks whether it leads now


class Collector:
    """Runs `Store.gc(older_than=...)` every `every` seconds while `leading()` holds."""

    def __init__(
        self,
        store: Store,
        *,
        older_than: float = DEFAULT_OLDER_THAN,
        every: float = GC_EVERY,
        first_after: float = FIRST_AFTER,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.older_than = older_than
        self.every = every
        self.first_after = first_after
        self.report = report or (lambda text: logger.warning("%s", text))

    def collect(self, now: float) -> list[str]:
        """One collection at `now`; the ids of the runs deleted."""
        deleted = self.store.gc(older_than=self.older_than, now=now)
        self.store.gc_cache(older_than=self.older_than, now=now)  # cached tasks' old entries
        if deleted:
            before = datetime.fromtimestamp(now - self.older_than, UTC)
            stamp = before.isoformat(timespec="seconds").replace("+00:00", "Z")
            self.report(f"gc: deleted {len(deleted)} run(s) finished before {stamp}")
            logger.info("gc deleted %s", deleted, extra={"action": "gc", "runs": deleted})
        return deleted

    def run(
        self,
        stop: threading.Event,
        *,
        leading: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Collect every `every` seconds while leading, until `stop` is set. Store errors are
        reported and retried at the next interval; they never end the loop."""
        delay = self.first_after
        while not stop.wait(delay):
            if not leading():
                delay = min(STANDBY_CHECK, self.first_after)
                continue
            try:
                self.collect(clock())
            except errors.StoreError as exc:
                self.report(f"gc: {exc.message}; trying again in {self.every:g} s")
            delay = self.every

    def start(
        self, stop: threading.Event, *, leading: Callable[[], bool], clock: Callable[[], float]
    ) -> threading.Thread:
        """`run` in a daemon thread (a gc in progress must not hold up the process's exit)."""
        thread = threading.Thread(
            target=self.run,
            args=(stop,),
            kwargs={"leading": leading, "clock": clock},
            name="gc",
            daemon=True,
        )
        thread.start()
        return thread
