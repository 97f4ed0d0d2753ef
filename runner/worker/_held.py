"""What the worker's thread roles share: the attempts it holds, under one lock, and the
interface of the executor it runs them with."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runner.executor import ExecResult
from runner.models import Lease, TaskKey, TaskSpec
from runner.worker._depth import Depth


class AttemptExecutor(Protocol):
    """What the worker needs of `runner.executor.Executor` (tests pass a small fake)."""

    @property
    def log_limit(self) -> int: ...

    def log_file(self, log_name: str) -> str: ...

    def run(
        self,
        spec: TaskSpec,
        *,
        env: Mapping[str, str],
        log_name: str,
        cancel: threading.Event,
    ) -> ExecResult: ...

    def set_deadline(self, deadline: float | None) -> None: ...

    def kill_all(self) -> None: ...

    def close(self, *, wait: bool = True) -> None: ...


@dataclass(slots=True)
class Slot:
    """One held attempt: running, queued for a slot thread, or waiting to be recorded."""

    lease: Lease
    cancel: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # fenced or drained: record nothing


class Held:
    """The attempts a worker holds, counted against its room for claims.

    Like Celery's prefetch: the worker may hold up to `prefetch` claimed tasks beyond its
    `concurrency` busy slots, and claims in batches of at least half of that (`batch`), so one
    claim transaction serves several tasks. The depth adapts to the measured task and claim
    times (`_depth.Depth`) unless fixed with `--prefetch N`. Held tasks are owned (and lost
    with the worker) like running ones. While the lease is fenced (`fence` until `open`),
    whatever is held is abandoned at once: it runs no attempt and records nothing; so is a
    lease of another worker id than the one `open` was given (a claim sent before a fence that
    returns after the worker registered again: the reaper no longer watches that old lease).
    """

    def __init__(self, *, concurrency: int, prefetch: int | None) -> None:
        self.concurrency = max(1, concurrency)
        self.depth = Depth(concurrency=self.concurrency, fixed=prefetch)
        self._slots: dict[TaskKey, Slot] = {}
        self._open = False  # registered and not fenced since
        self._worker_id = ""  # the id it registered under
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)  # notified when a claim has room

    @property
    def prefetch(self) -> int:
        """Claimed tasks the worker may hold beyond its busy slots now."""
        return self.depth.current()

    @property
    def batch(self) -> int:
        return self.depth.batch()

    def running(self) -> int:
        with self._lock:
            return len(self._slots)

    def task_took(self, seconds: float) -> None:
        """Note an attempt's time on its slot; wake the claim loop when the depth grew into
        room for a claim."""
        if self.depth.task_took(seconds) and self.has_room():
            with self._room:
                self._room.notify_all()

    def free(self) -> int:
        """How many more tasks the worker may hold."""
        return self.concurrency + self.prefetch - self.running()

    def has_room(self) -> bool:
        """With slots idle, room for whatever can be claimed; with every slot busy, room for a
        prefetch batch."""
        with self._lock:
            held = len(self._slots)
        free = self.concurrency + self.prefetch - held
        return free > 0 and (held < self.concurrency or free >= self.batch)

    def wait_for_room(self, timeout: float, *, stop: threading.Event) -> None:
        with self._room:
            self._room.wait_for(lambda: stop.is_set() or self.has_room(), timeout)

    def wake(self) -> None:
        """Wake `wait_for_room` (its `stop` was set)."""
        with self._room:
            self._room.notify_all()

    def hold(self, lease: Lease) -> Slot:
        """A claimed task's slot, counted as held."""
        with self._lock:
            return self._hold(lease)

    def forget(self, slot: Slot) -> None:
        with self._room:
            self._slots.pop(slot.lease.key, None)
            if self.has_room():  # what the claim loop waits for
                self._room.notify_all()

    def hand_over(self, slot: Slot, lease: Lease) -> Slot:
        """`slot`'s successor `lease` (claimed by its finish) takes its place, without waking
        the claim loop; abandoned when the lease was fenced meanwhile."""
        with self._lock:
            self._slots.pop(slot.lease.key, None)
            nxt = self._hold(lease)
            nxt.abandoned = nxt.abandoned or slot.abandoned
        return nxt

    def replace(self, done: Iterable[Slot], leases: list[Lease]) -> list[Slot]:
        """The tasks claimed by a batch's finish take the finished ones' places under one lock
        hold, so the claim loop is woken only when room is left (not by each slot freeing for
        a moment)."""
        with self._room:
            for slot in done:
                self._slots.pop(slot.lease.key, None)
            started = [self._hold(lease) for lease in leases]
            if self.has_room():
                self._room.notify_all()
        return started

    def cancel(self, *, run_id: str | None = None, keys: Iterable[TaskKey] | None = None) -> None:
        """Kill the held attempts of one run, of the given keys, or (neither) all of them."""
        with self._lock:
            if keys is not None:
                slots = [self._slots[key] for key in keys if key in self._slots]
            else:
                slots = [s for s in self._slots.values() if run_id in (None, s.lease.run_id)]
            for slot in slots:
                slot.cancel.set()

    def abandon_all(self) -> None:
        """Record nothing for any held attempt, and stop the running ones."""
        with self._lock:
            for slot in self._slots.values():
                slot.abandoned = True
                slot.cancel.set()

    def fence(self) -> None:
        """The lease may be gone: abandon everything held, and whatever arrives until `open`."""
        with self._lock:
            self._open = False
            self.abandon_all()

    def open(self, worker_id: str) -> None:
        """The worker (re)registered as `worker_id`: what it claims under that id runs."""
        with self._lock:
            self._open = True
            self._worker_id = worker_id

    def _hold(self, lease: Lease) -> Slot:
        current = self._open and lease.worker_id == self._worker_id
        slot = Slot(lease=lease, abandoned=not current)
        self._slots[lease.key] = slot
        return slot
