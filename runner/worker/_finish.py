"""Recording attempts: the one fence/retry loop behind single and batched finishes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from runner import errors
from runner.models import Lease, Outcome, TaskKey
from runner.store.base import Store
from runner.worker._held import Held, Slot
from runner.worker._lease import LeaseKeeper

logger = logging.getLogger(__name__)

RETRY_PAUSE = 0.2  # seconds before the first retry of a finish the store refused
RETRY_PAUSE_MAX = 2.0  # the pause doubles up to this while the store keeps failing

Done = list[tuple[Slot, Outcome]]
# One store call recording the live attempts: (lost keys, tasks claimed with it).
Send = Callable[[Done], tuple[list[TaskKey], list[Lease]]]


class Finisher:
    """Records attempts' outcomes, claiming the room they free with the same store call.

    `may_claim` says whether the worker claims at all now (not stopping, draining or fenced).
    """

    def __init__(
        self,
        store: Store,
        held: Held,
        lease: LeaseKeeper,
        *,
        labels: Mapping[str, str],
        may_claim: Callable[[], bool],
    ) -> None:
        self._store = store
        self._held = held
        self._lease = lease
        self._labels = labels
        self._may_claim = may_claim

    def finish(self, slot: Slot, outcome: Outcome) -> list[Lease]:
        """Record one attempt with `Store.finish`, which claims the slot's next task (one while
        claiming is allowed and no prefetched task waits for a slot)."""

        def send(live: Done) -> tuple[list[TaskKey], list[Lease]]:
            ((slot, outcome),) = live
            chain = self._may_claim() and self._held.running() <= self._held.concurrency
            leases = self._store.finish(
                slot.lease, outcome, now=time.time(), claim=int(chain), labels=self._labels
            )
            return [], leases

        return self._record([(slot, outcome)], send)

    def finish_many(self, done: Done) -> list[Lease]:
        """Record several attempts with one `Store.finish_many`, claiming the room they free."""

        def send(live: Done) -> tuple[list[TaskKey], list[Lease]]:
            room = self._held.free() + len(live) if self._may_claim() else 0
            lost, leases = self._store.finish_many(
                [(slot.lease, outcome) for slot, outcome in live],
                now=time.time(),
                claim=room,
                labels=self._labels,
            )
            if self._store.finish_claims_queue:
                self._held.depth.claimed(None, asked=room, got=len(leases))
            return lost, leases

        return self._record(done, send)

    def _record(self, done: Done, send: Send) -> list[Lease]:
        """Send the attempts not abandoned; retry while the store is unreachable and the lease
        may hold. Past the self-fencing deadline the worker fences (the reaper may have killed
        these tasks, and the attempts would stay ours forever) and records nothing."""
        pause = RETRY_PAUSE
        while True:
            live = [(slot, outcome) for slot, outcome in done if not slot.abandoned]
            if not live:
                return []
            if self._lease.expired():
                self._lease.fence()
                return []
            try:
                lost, leases = send(live)
            except errors.LeaseLost:
                lost, leases = [slot.lease.key for slot, _ in live], []
            except errors.StoreError as exc:
                self._lease.health.failed("finish", "finish failed, retrying", exc)
                # A pause, not a wait on a stop event: stopping the worker must not turn this
                # into a busy loop; the deadline above or the attempts' abandonment ends it.
                time.sleep(pause)
                pause = min(2 * pause, RETRY_PAUSE_MAX)
                continue
            self._lease.health.ok("finish")
            for run_id, task_id in lost:
                logger.warning("lease lost: %s/%s not recorded", run_id, task_id)
            return leases
