"""The scheduler loop: campaign for leadership, keep a folder applied, fire due ticks.

Several schedulers may run against one store; one leads (`Store.campaign`), the others stand
by and take over when the leader's lease lapses. The leader renews every `ttl / 4` and fires
only while its last renewal is younger than `ttl * 3 / 4` (self-fencing: a leader that cannot
reach the store stops before a successor can start). Firing is idempotent anyway (see
`runner.cron.fire`), so even a leader that wakes up from a pause past its TTL cannot double a
tick; it can only try to create runs that already exist.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runner import errors
from runner.cron import fire, ticks
from runner.cron.folder import FolderSync
from runner.store.base import Store

logger = logging.getLogger(__name__)
SYNC_EVERY = 1.0  # seconds between looks at the --workflows folder
MIN_DELAY = 0.01


class Scheduler:
    """One scheduler process's loop; `step(now)` is one pass, `run(stop)` loops until `stop`."""

    def __init__(
        self,
        store: Store,
        *,
        candidate: str,
        lease_ttl: float = 10.0,
        folder: Path | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.ttl = lease_ttl
        self.report = report or (lambda text: logger.warning("%s", text))
        self.sync = FolderSync(store, folder, report=self.report) if folder else None
        self.leading = False
        self._renewed = float("-inf")  # monotonic time of the last successful campaign
        self._synced = float("-inf")

    def _campaign(self, now: float) -> bool:
        """Renew or seek the leadership every ttl/4; True while it is fresh enough to fire."""
        mono = time.monotonic()
        if mono - self._renewed >= self.ttl / 4:
            sent = time.monotonic()
            won = self.store.campaign(self.candidate, now=now, ttl=self.ttl)
            if won:
                self._renewed = sent
            if won != self.leading:
                self.report(f"scheduler {self.candidate}: {'leading' if won else 'standing by'}")
            self.leading = won
        return self.leading and time.monotonic() - self._renewed < self.ttl * 3 / 4

    def step(self, now: float) -> float:
        """One pass at `now`; the seconds to wait before the next pass."""
        if not self._campaign(now):
            return self.ttl / 4
        if self.sync is not None and time.monotonic() - self._synced >= SYNC_EVERY:
            self.sync.sync(now=now)
            self._synced = time.monotonic()
        soonest = now + self.ttl / 4
        for entry in self.store.list_schedules():
            fire.fire_due(self.store, entry, now=now)
            if not entry.suspended:
                nxt = ticks.next_ticks(
                    entry.schedule.cron, entry.schedule.timezone, after=now, count=1
                )
                soonest = min(soonest, nxt[0])
        return max(MIN_DELAY, soonest - time.time())

    def run(self, stop: threading.Event, *, clock: Callable[[], float] = time.time) -> None:
        """Loop until `stop` is set, then resign so a standby takes over at once. Store
        outages are reported and retried; they never end the loop."""
        try:
            while not stop.is_set():
                try:
                    delay = self.step(clock())
                except errors.StoreError as exc:
                    self.report(f"scheduler {self.candidate}: {exc.message}; retrying")
                    self.leading = False
                    delay = min(1.0, self.ttl / 4)
                stop.wait(delay)
        finally:
            with contextlib.suppress(errors.StoreError):
                self.store.resign(self.candidate, now=clock())
