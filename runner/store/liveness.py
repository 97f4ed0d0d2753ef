"""Worker liveness and clock disagreement as one observer (a store object) measures them.

A worker is dead when its heartbeat counter has not changed for its TTL of the *observer's own*
monotonic clock, as etcd's server-side leases judge it: no two processes' wall clocks are ever
compared to decide it, so a clock that is wrong or stepped (NTP) cannot make a live worker look
dead. Wall clocks are compared only to estimate how far another worker's clock is from ours
(from the heartbeat times it writes and when we saw them change): beyond `SKEW_BOUND` the
disagreement is reported, and deadlines and backoffs are judged by the earlier clock and written
by the later one, so a wrong clock can delay them but never cut them (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

REFRESH = 0.5  # seconds between re-reads of the worker rows by `Clocks.refresh`
# Clocks closer than this are taken to agree (seconds). Beyond it a worker's clock is reported
# (logs, `runner workers`) and the earlier/later-clock rules below apply.
SKEW_BOUND = 1.0

# A row as the observer reads it: (worker id, heartbeat counter, heartbeat time in the
# worker's clock, ttl).
Beat = tuple[str, int, float, float]


@dataclass(slots=True)
class _Seen:
    beats: int
    ttl: float
    seen: float  # the observer's monotonic time when this counter value was first seen
    lo: float  # bounds on (their clock - ours), seconds; hi is known only once we saw the
    hi: float | None  # counter change (at first sight the heartbeat may be of any age)
    ttl_hi: float = 0.0  # a bound on their clock if the worker is alive: lo + its ttl


class Observer:
    """One store object's view of the workers' heartbeats. Not thread-safe: call it under the
    store's lock (inside its transactions)."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._seen: dict[str, _Seen] = {}
        self._own: set[str] = set()  # workers registered through this object: our clock
        self._last_read: float | None = None

    def wrote(self, worker_id: str, *, beats: int, ttl: float) -> None:
        """This object registered or renewed the worker: it is alive from now for `ttl`."""
        self._own.add(worker_id)
        self._seen[worker_id] = _Seen(beats, ttl, self._monotonic(), 0.0, 0.0, 0.0)

    def forget(self, worker_id: str) -> None:
        """The worker's row is gone (swept or deregistered)."""
        self._seen.pop(worker_id, None)
        self._own.discard(worker_id)

    def observe(self, rows: Iterable[Beat], *, now: float) -> None:
        """Take in every worker row, read at wall time `now` (our clock)."""
        mono = self._monotonic()
        present: set[str] = set()
        for worker_id, beats, heartbeat_at, ttl in rows:
            present.add(worker_id)
            old = self._seen.get(worker_id)
            if old is not None and old.beats == beats:
                continue
            lo = heartbeat_at - now  # it wrote heartbeat_at before we read it
            hi = None  # first sight: a stale heartbeat (a dead worker) looks like a slow clock
            if old is not None and self._last_read is not None:
                hi = lo + (mono - self._last_read)  # written since our previous read
            self._seen[worker_id] = _Seen(beats, ttl, mono, lo, hi, lo + ttl)
        for gone in set(self._seen) - present:
            self.forget(gone)
        self._last_read = mono

    def dead(self, worker_id: str) -> bool:
        """Whether the worker's heartbeat has not changed for its ttl of our monotonic time
        (unknown workers are not judged: they are not dead to this observer yet)."""
        seen = self._seen.get(worker_id)
        return seen is not None and self._monotonic() - seen.seen >= seen.ttl

    def dead_ids(self) -> list[str]:
        """The workers `dead` judges dead, sorted."""
        return sorted(w for w in self._seen if self.dead(w))

    def _others(self) -> list[_Seen]:
        return [s for w, s in self._seen.items() if w not in self._own and not self.dead(w)]

    def earliest(self) -> float:
        """Offset (<= 0) from our clock to the earliest live clock that disagrees with it:
        judge deadlines and backoffs at `now + earliest()`. A worker seen only once counts
        with its heartbeat time (a lower bound of its clock, whatever its age): until its
        next heartbeat or its death, a stale row delays them, never cuts them."""
        behind = [s.lo for s in self._others() if (s.lo if s.hi is None else s.hi) < -SKEW_BOUND]
        return min(behind, default=0.0)

    def latest(self) -> float:
        """Offset (>= 0) from our clock to the latest live clock that disagrees with it: write
        deadlines and backoffs from `now + latest()`."""
        ahead = [s.ttl_hi if s.hi is None else s.hi for s in self._others() if s.lo > SKEW_BOUND]
        return max(ahead, default=0.0)

    def skew(self) -> float | None:
        """How far our clock is from the other live workers' beyond SKEW_BOUND (positive: ours
        is ahead), the largest disagreement; None when they agree."""
        others = self._others()
        ahead = max((s.lo for s in others if s.lo > SKEW_BOUND), default=0.0)
        behind = min((s.hi for s in others if s.hi is not None and s.hi < -SKEW_BOUND), default=0.0)
        if not ahead and not behind:
            return None
        return -ahead if ahead >= -behind else -behind


class Clocks:
    """A store object's observer, fed from its own reads of the worker rows, with the two
    offsets cached as plain floats any thread may read (`ahead`, `behind`). Call `refresh`
    and `wrote` where the store serialises its calls (SQLite: inside its transactions)."""

    def __init__(self) -> None:
        self.observer = Observer()
        self.ahead = 0.0  # offset to the latest live clock that disagrees with ours (>= 0)
        self.behind = 0.0  # offset to the earliest (<= 0)
        self._read_at: float | None = None
        self._skew: float | None = None
        self._lock = threading.Lock()  # several threads of one store object may read rows

    def stale(self) -> bool:
        """Whether the rows were last read REFRESH or more ago (or never)."""
        return self._read_at is None or time.monotonic() - self._read_at >= REFRESH

    def refresh(self, rows: Iterable[Beat], *, now: float) -> None:
        """Take in the worker rows, read at `now` (our clock)."""
        with self._lock:
            self.observer.observe(rows, now=now)
            self._read_at = time.monotonic()
            self.ahead, self.behind = self.observer.latest(), self.observer.earliest()

    def own(self, worker_id: str, *, ttl: float) -> None:
        """A worker registered through this store object (its clock is ours)."""
        with self._lock:
            self.observer.wrote(worker_id, beats=-1, ttl=ttl)

    def expired(self, worker_id: str) -> bool:
        """Whether this process saw the worker's heartbeat unchanged for its ttl."""
        return self.observer.dead(worker_id)

    def skew(self, worker_id: str) -> float | None:
        """Our clock's distance from the other live workers' (for our own worker row); logs
        when it goes beyond the bound, changes by more than it, or comes back."""
        with self._lock:
            skew = self.observer.skew()
        old = self._skew
        changed = skew is None or old is None or abs(skew - old) > SKEW_BOUND
        if skew is not None and changed:
            logger.warning(
                "worker %s: this process's clock is %+.1f s off other live workers' (bound"
                " %.1f s); liveness is judged by elapsed time only, deadlines and backoffs by"
                " the earliest clock (docs/RELIABILITY.md)",
                worker_id,
                skew,
                SKEW_BOUND,
                extra={"action": "clock_skew", "worker": worker_id, "skew": skew},
            )
        elif skew is None and old is not None:
            logger.warning("worker %s: clock agrees with the other live workers again", worker_id)
        if changed:
            self._skew = skew
        return skew
