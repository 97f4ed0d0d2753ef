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

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
