"""The adaptive prefetch depth: how many claimed, unstarted tasks a worker may hold.

A worker measures what its tasks take on a slot and what a claim costs, and from that holds
only as much claimed, unstarted work as its slots are expected to start within `WINDOW`:
`depth = concurrency * WINDOW / task time`, capped at `MAX_DEPTH`. Short tasks are claimed and
recorded in batches; a task that takes `GAIN` claim costs or more gains little from a batch,
so such tasks (and any task longer than `concurrency * WINDOW` seconds) are not prefetched at
all. Until `SAMPLES` tasks have been measured the depth is 0 (today's strict behaviour). When
a claim comes back with fewer tasks than it asked for, the queue is short: the worker claims
again as soon as one slot frees (batch 1) rather than waiting for room for a batch, so what is
left is spread over the workers. `--prefetch N` fixes the depth at N (0: strict priority).

The priority bound that follows (docs/ARCHITECTURE.md, "Prefetch and the priority order"):
a task queued at a higher priority than a worker's held tasks is claimed by that worker's next
claim, which comes at the latest when half its depth has been started, and runs before the
held tasks of lower priority; so it starts within about one `WINDOW` of work.
"""

from __future__ import annotations

import threading

WINDOW = 0.1  # seconds of claimed, unstarted work a worker may hold
MAX_DEPTH = 256  # held tasks beyond the busy slots, at most
GAIN = 50.0  # prefetch only while a task takes less than this many claim costs
SHORT_PROBE = 32  # a claim that asked for this many or more and got fewer: the queue is short
SAMPLES = 3  # attempts measured before the depth may rise above 0
SMOOTHING = 0.2  # weight of each new measurement in the moving averages


class Depth:
    """The prefetch depth of one worker: fixed (`fixed`), or adapted from its measurements."""

    def __init__(self, *, concurrency: int, fixed: int | None) -> None:
        self.concurrency = max(1, concurrency)
        self.fixed = None if fixed is None else max(0, fixed)
        self.task_time: float | None = None  # seconds per attempt on a slot (moving average)
        self.claim_time: float | None = None  # seconds per claim call (moving average)
        self.short = False  # the last claim found fewer tasks than it asked for
        self.samples = 0  # attempts measured
        self._lock = threading.Lock()

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    @property
    def may_prefetch(self) -> bool:
        """Whether the depth can ever be above 0 (the worker needs a recorder)."""
        return self.fixed is None or self.fixed > 0

    def current(self) -> int:
        """Claimed tasks the worker may hold beyond its busy slots now."""
        if self.fixed is not None:
            return self.fixed
        task, claim = self.task_time, self.claim_time
        if task is None or self.samples < SAMPLES or (claim is not None and task >= GAIN * claim):
            return 0
        return min(MAX_DEPTH, int(self.concurrency * WINDOW / max(task, 1e-6)))

    def batch(self) -> int:
        """The room a claim waits for while every slot is busy: half the depth, or 1 while
        the queue is short (adaptive only)."""
        if self.fixed is None and self.short:
            return 1
        return max(1, self.current() // 2)

    def task_took(self, seconds: float) -> bool:
        """Note one attempt's time on its slot; True when the depth changed."""
        with self._lock:
            before = self.current()
            self.task_time = _average(self.task_time, seconds)
            self.samples += 1
            return self.current() != before

    def claimed(self, seconds: float | None, *, asked: int, got: int) -> None:
        """Note one claim: what it cost (None: not measured, e.g. it came with a finish) and
        whether the queue had what it asked for."""
        with self._lock:
            if seconds is not None:
                self.claim_time = _average(self.claim_time, seconds)
            if asked > 0:  # a store may cap one call's claims: look at the first few
                self.short = got < min(asked, SHORT_PROBE)


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)
