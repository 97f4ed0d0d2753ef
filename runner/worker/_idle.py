"""The claim loop's idle wait: `Store.wait` in a thread of its own, so `stop()` ends it at once."""

from __future__ import annotations

import logging
import threading

from runner import errors
from runner.store.base import Store

logger = logging.getLogger(__name__)

STORE_WAIT = 0.5  # seconds of one `Store.wait` call of the waiting thread


class IdleWait:
    """`wait(timeout, since)` returns when the store may have changed since `seen()` answered
    `since`, `timeout` passed, or `stop()` was called. A `Store.wait` cannot be interrupted, so
    the waiting thread (`idle`, started with the first wait) makes the calls, one per request
    of the claim loop, and the claim loop waits on a condition that `stop()` also notifies: a
    worker stops without sitting out a store wait (`runner apply` exits as soon as its run
    ends).

    The claim loop takes `seen()` before it looks at the store, and every change the idle
    thread's `Store.wait` returned for counts from then on, whichever request it was made for:
    a change that came while the claim loop looked (after the look read, before its next
    request) is one the idle thread's next `Store.wait` counts as seen, and would otherwise
    leave a submitted run unclaimed until the next change or `STORE_WAIT`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition(threading.Lock())
        self._asked = 0  # waits requested by the claim loop
        self._answered = 0  # requests a `Store.wait` has returned for since they were made
        self._changes = 0  # `Store.wait` calls that returned for a change
        self._stopped = False
        self._thread: threading.Thread | None = None

    def seen(self) -> int:
        """A mark of the changes seen so far, to take before looking at the store."""
        with self._cond:
            return self._changes

    def wait(self, timeout: float, since: int) -> bool:
        """Until the store may have changed since `seen()` answered `since`, `timeout`
        seconds, or `stop()`; True when it may have."""
        with self._cond:
            if self._stopped or self._changes > since:
                return self._changes > since
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="idle", daemon=True)
                self._thread.start()
            self._asked += 1
            mine = self._asked
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._changes > since or self._answered >= mine or self._stopped, timeout
            )
            return self._changes > since

    def stop(self) -> None:
        """End every wait now; the thread ends after its current `Store.wait`."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (before the store closes under it)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._asked > self._answered or self._stopped)
                if self._stopped:
                    return
                target = self._asked
            changed = False
            try:
                changed = self._store.wait(STORE_WAIT)
            except errors.StoreError as exc:  # the claim loop's next claim reports it
                logger.debug("store wait failed: %s", exc)
            with self._cond:
                self._answered = target
                self._changes += int(changed)
                self._cond.notify_all()
