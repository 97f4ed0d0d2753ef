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
        self._waiting = False  # the recorder waits for a batch: wake it on each outcome
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="record", daemon=True)
        self._thread.start()

    def put(self, slot: Slot, outcome: Outcome) -> None:
        """Queue an attempt's outcome for recording."""
        with self._cond:
            self._done.append((slot, outcome))
            if self._waiting or len(self._done) == 1:  # what the recorder waits for
                self._cond.notify()

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
        keep = 2 * self._held.concurrency
        with self._cond:
            self._cond.wait_for(lambda: bool(self._done) or self._stopping)
            if self._batch_wait > 0 and len(self._done) < batch:
                # While the slots have claimed tasks queued (`keep`: enough to stay busy while
                # a batch is recorded), recording now gains nothing: wait for the batch, for
                # one transaction, at most Store.finish_batch_wait. Each outcome added wakes
                # the wait, which ends as soon as the slots' queue runs low.
                self._waiting = True
                self._cond.wait_for(
                    lambda: (
                        len(self._done) >= batch or self._stopping or self._slots.backlog() < keep
                    ),
                    self._batch_wait,
                )
                self._waiting = False
            done, self._done = self._done, []
        return done

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
