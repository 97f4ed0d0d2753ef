"""The prefetch recorder thread: records the slots' outcomes in batches."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from runner.models import Lease, Outcome
from runner.worker._finish import Done, Finisher
from runner.worker._held import Held, Slot

if TYPE_CHECKING:
    from runner.worker._slots import SlotThreads

logger = logging.getLogger(__name__)


class Recorder:
    """With prefetch, a slot hands its attempt's outcome here and starts its next held task at
    once; this thread records whatever has piled up in one `Store.finish_many` (one
    transaction on SQLite), so the store round overlaps the tasks' execution, and gives the
    tasks claimed with it to the slot threads."""

    def __init__(
        self, finisher: Finisher, held: Held, slots: SlotThreads, *, batch_wait: float
    ) -> None:
        self._finisher = finisher
        self._held = held
        self._slots = slots
        self._batch_wait = batch_wait  # Store.finish_batch_wait
        self._done: Done = []
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._waiting = 0  # the batch size the recorder waits for (0: it does not wait)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="record", daemon=True)
        self._thread.start()

    def put(self, slot: Slot, outcome: Outcome) -> None:
        """Queue an attempt's outcome for recording."""
        with self._cond:
            self._done.append((slot, outcome))
            n = len(self._done)
            if n == 1 or (self._waiting and (n >= self._waiting or self._low())):
                self._cond.notify()  # what the recorder waits for

    def stop(self) -> None:
        """Record what the slots left (they have all returned) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while batch := self._next_batch():
            self._record(batch)
        # stopped, and nothing left to record

    def _next_batch(self) -> Done:
        batch = self._held.batch
        with self._cond:
            self._cond.wait_for(lambda: bool(self._done) or self._stopping)
            if self._batch_wait > 0 and len(self._done) < batch:
                # While the slots have claimed tasks queued (not `_low`), recording now gains
                # nothing: wait for the batch, for one transaction, at most
                # Store.finish_batch_wait; an outcome that finds the queue low ends the wait.
                self._waiting = batch
                self._cond.wait_for(
                    lambda: len(self._done) >= batch or self._stopping or self._low(),
                    self._batch_wait,
                )
                self._waiting = 0
            done, self._done = self._done, []
        return done

    def _low(self) -> bool:
        """Whether the slots' queue of claimed tasks runs low: fewer than two per slot (one to
        run while the batch is recorded, one while the room it frees is claimed)."""
        return self._slots.backlog() < 2 * self._held.concurrency

    def _record(self, batch: Done) -> None:
        """Record the batch's outcomes, claiming the room it frees; the claimed tasks go to the
        slot threads."""
        leases: list[Lease] = []
        try:
            leases = self._finisher.finish_many(batch)
        finally:
            started = self._held.replace((slot for slot, _ in batch), leases)
            for slot in started:
                self._slots.run(slot)
