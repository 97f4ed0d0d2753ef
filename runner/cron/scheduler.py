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

from runner import dispatch, errors
from runner.cron import fire, retention, ticks
from runner.cron.folder import FolderSync
from runner.hooks import Deliverer
from runner.store.base import Store

logger = logging.getLogger(__name__)
SYNC_EVERY = 1.0  # seconds between looks at the --workflows folder
MIN_DELAY = 0.01
DISPATCH_WAIT = 0.2  # longest pause between dispatch passes while leading


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
        dispatch_default: str = dispatch.PULL,
        dispatch_state: dispatch.DispatchState | None = None,
        gc_older_than: float = retention.DEFAULT_OLDER_THAN,
        hooks: Deliverer | None = None,
        anchor: bool = True,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.ttl = lease_ttl
        self.report = report or (lambda text: logger.warning("%s", text))
        self.sync = FolderSync(store, folder, report=self.report, anchor=anchor) if folder else None
        self.leading = False
        self.dispatch_default = dispatch_default
        self.dispatch_state = dispatch_state or dispatch.DispatchState()
        self.ends = RunEnds(store, report=self.report)  # the fired runs, until they end
        self._renewed = float("-inf")  # monotonic time of the last successful campaign
        self.hooks = hooks  # delivers recorded hook deliveries while leading (docs/HOOKS.md)
        self._synced = float("-inf")
        # The leader deletes finished runs older than gc_older_than (0: never), in a thread.
        self.collector = (
            retention.Collector(store, older_than=gc_older_than, report=self.report)
            if gc_older_than > 0
            else None
        )

    def _campaign(self, now: float) -> bool:
        """Renew or seek the leadership every ttl/4; True while it is fresh enough to fire."""
        mono = time.monotonic()
        if mono - self._renewed >= self.ttl / 4:
            sent = time.monotonic()
            won = self.store.campaign(self.candidate, now=now, ttl=self.ttl)
            if won:
                self._renewed = sent
            if won and not self.leading:
                self.store.set_dispatch(self.candidate, self.dispatch_default, now=now)
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
            for fired in fire.fire_due(self.store, entry, now=now, report=self.report):
                if fired.created and fired.run_id is not None:
                    self.ends.watch(fired.run_id)
            if not entry.suspended:
                nxt = ticks.next_ticks(
                    entry.schedule.cron, entry.schedule.timezone, after=now, count=1
                )
                soonest = min(soonest, nxt[0])
        self.ends.check()
        return max(MIN_DELAY, soonest - time.time())

    def dispatch_once(self, now: float) -> int:
        """One dispatch pass (leader only): assign the ready non-pull tasks; how many."""
        view = self.store.dispatch_view(now=now, default=self.dispatch_default)
        plan = dispatch.plan_assignments(
            view, default=self.dispatch_default, state=self.dispatch_state
        )
        return len(self.store.assign(plan, now=now)) if plan else 0

    def _fresh(self) -> bool:
        return self.leading and time.monotonic() - self._renewed < self.ttl * 3 / 4

    def run(self, stop: threading.Event, *, clock: Callable[[], float] = time.time) -> None:
        """Loop until `stop` is set, then resign so a standby takes over at once. Store
        outages are reported and retried; they never end the loop."""
        next_step = float("-inf")  # monotonic time of the next cron pass
        halt = threading.Event()  # stops the gc thread however this loop ends
        if self.collector is not None:
            self.collector.start(halt, leading=self._fresh, clock=clock)
        if self.hooks is not None:
            self.hooks.start(halt, active=self._fresh, clock=clock)
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_step:
                        next_step = time.monotonic() + self.step(clock())
                    if self._fresh():
                        self.dispatch_once(clock())
                except errors.StoreError as exc:
                    self.report(f"scheduler {self.candidate}: {exc.message}; retrying")
                    self.leading = False
                    next_step = time.monotonic() + min(1.0, self.ttl / 4)
                self._pause(stop, next_step)
        finally:
            halt.set()
            with contextlib.suppress(errors.StoreError):
                self.store.resign(self.candidate, now=clock())

    def _pause(self, stop: threading.Event, next_step: float) -> None:
        """Until the next cron pass; while leading, also until the store changes (bounded)."""
        delay = max(0.0, next_step - time.monotonic())
        if not self._fresh():
            stop.wait(delay)
            return
        try:
            self.store.wait(min(delay, DISPATCH_WAIT))
        except errors.StoreError:
            stop.wait(min(delay, DISPATCH_WAIT))


class RunEnds:
    """The runs this scheduler fired, each reported in one line when it ends."""

    def __init__(self, store: Store, *, report: Callable[[str], None]) -> None:
        self.store = store
        self.report = report
        self.runs: list[str] = []

    def watch(self, run_id: str) -> None:
        self.runs.append(run_id)

    def check(self) -> None:
        """Report the watched runs that have ended (a deleted run is dropped silently)."""
        left: list[str] = []
        for run_id in self.runs:
            try:
                run = self.store.get_run(run_id, tasks=False)
            except errors.RunNotFound:
                continue
            if not run.state.terminal:
                left.append(run_id)
                continue
            took = (run.finished_at or 0.0) - (run.started_at or run.created_at)
            self.report(f"run {run_id} {run.state.value} in {took:.1f}s")
        self.runs = left
