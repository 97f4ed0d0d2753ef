"""The claim loop: claims ready tasks while the worker has room, until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from runner import errors
from runner.store.base import Store
from runner.worker._held import Held
from runner.worker._idle import IdleWait
from runner.worker._lease import LeaseKeeper
from runner.worker._slots import SlotThreads

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds between looks while nothing can be claimed


class ClaimLoop:
    """Runs in the thread that calls `Worker.run`. It claims only for room that is free (at
    start, after an idle spell, after finishes that claimed nothing), in batches of up to the
    free room; a finish claims its slot's next task itself."""

    def __init__(
        self, store: Store, held: Held, lease: LeaseKeeper, *, labels: Mapping[str, str]
    ) -> None:
        self._store = store
        self._held = held
        self._lease = lease
        self._labels = labels
        self._stop = threading.Event()
        self._idle = IdleWait(store)

    def run(self, slots: SlotThreads, *, until: Callable[[], bool] | None = None) -> bool:
        """Claim and give the claimed tasks to `slots` until `stop()`, `until()` or a drain
        request; True for a drain request."""
        while not self._stop.is_set() and not (until is not None and until()):
            if self._lease.drain_asked.is_set():
                return True
            if not self._held.has_room():
                # a slot frees without any store commit
                self._held.wait_for_room(IDLE_WAIT, stop=self._stop)
            else:
                seen = self._idle.seen()  # before the claim looks: what comes later wakes
                if not self._claim_some(slots):
                    self._idle.wait(IDLE_WAIT, seen)
        return False

    def stop(self) -> None:
        """Stop claiming (and stop finishes from claiming); a claim loop waiting for the
        store returns at once."""
        self._stop.set()
        self._idle.stop()
        self._held.wake()

    def join(self, timeout: float) -> None:
        """Wait for the idle thread's last `Store.wait` (before the store is closed)."""
        self._idle.join(timeout)

    def may_claim(self) -> bool:
        """Whether the worker claims at all now: not stopped, draining or fenced."""
        return not self._stop.is_set() and self._lease.may_claim()

    def _claim_some(self, slots: SlotThreads) -> bool:
        """Claim up to the free room's worth of tasks; True when something was claimed."""
        free = self._held.free()
        if not self._held.has_room() or not self._lease.may_claim():
            return False
        began = time.monotonic()
        try:
            leases = self._store.claim(
                self._lease.id, now=time.time(), limit=free, labels=self._labels
            )
            self._held.depth.claimed(time.monotonic() - began, asked=free, got=len(leases))
        except errors.LeaseLost:
            self._lease.fence()
            return False
        except errors.StoreError as exc:
            self._lease.health.failed("claim", "claim failed", exc)
            self._stop.wait(IDLE_WAIT)
            return False
        self._lease.health.ok("claim")
        for lease in leases:
            slots.run(self._held.hold(lease))
        return bool(leases)
