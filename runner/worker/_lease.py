"""Lease keeping: registration, the heartbeat thread, the self-fencing deadline, fencing."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from runner import errors
from runner.models import WorkerInfo
from runner.store.base import Store
from runner.worker._health import StoreHealth
from runner.worker._held import AttemptExecutor, Held

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.5  # seconds between sweeps for dead workers' tasks


def new_worker_id(name: str) -> str:
    return f"{name}-{os.getpid()}-{secrets.token_hex(3)}"


class LeaseKeeper:
    """The worker's lease and its heartbeat thread.

    The thread renews the lease every TTL/5 and sweeps the store for dead workers' tasks every
    `SWEEP_INTERVAL`. Self-fencing: the keeper holds `deadline = send time of the last answered
    heartbeat + TTL - 2 heartbeat intervals` (monotonic); past it (or when the store says the
    lease is lost) it fences: every held attempt is killed and abandoned, recording nothing,
    before the store can have given it to anyone else (docs/GUARANTEES.md, G3 and G5), and the
    worker comes back under a new id. The old lease expires on its own and `sweep` re-queues
    its attempts.
    """

    def __init__(
        self,
        store: Store,
        executor: AttemptExecutor,
        held: Held,
        *,
        name: str,
        info: Callable[[], WorkerInfo],
        ttl: float,
    ) -> None:
        self._store = store
        self._executor = executor
        self._held = held
        self._name = name
        self._info = info
        self.id = new_worker_id(name)
        self.ttl = ttl
        self.interval = ttl / 5
        self.registered = False
        self.health = StoreHealth()  # shared with the claim loop and the finisher
        self.drain_asked = threading.Event()  # `runner worker drain`, seen in a heartbeat
        self._deadline = 0.0  # monotonic self-fencing deadline
        self._lock = threading.Lock()  # the first of several fencing threads fences
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def register(self) -> None:
        sent = time.monotonic()
        self._store.register_worker(self._info(), now=time.time(), ttl=self.ttl)
        self.health.ok("register")
        self._set_deadline(sent + self.ttl - 2 * self.interval)
        self.registered = True
        self._held.open(self.id)
        logger.info("registered worker %s", self.id, extra={"action": "worker_registered"})

    def start(self) -> None:
        """Start the heartbeat thread (after `register`)."""
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """End the heartbeat thread, close the lease, and lift the executor's deadline."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._store.deregister_worker(self.id, now=time.time())
        except errors.StoreError as exc:
            logger.warning("could not deregister worker %s: %s", self.id, exc)
        self._executor.set_deadline(None)

    def expired(self) -> bool:
        """Past the self-fencing deadline: the lease may be gone."""
        return time.monotonic() >= self._deadline

    def may_claim(self) -> bool:
        """Registered, not asked to drain, and within the deadline."""
        return self.registered and not self.drain_asked.is_set() and not self.expired()

    # ------------------------------------------------------------------ the heartbeat thread

    def _loop(self) -> None:
        next_beat = next_sweep = time.monotonic()
        while not self._stop.is_set():
            # The deadline first: after a pause past it, our tasks were killed by the reaper and
            # a heartbeat must not make their attempts look alive again.
            if self.registered and self.expired():
                self.fence()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.interval
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + SWEEP_INTERVAL
            self._stop.wait(max(0.0, min(next_beat, next_sweep) - time.monotonic()))

    def _heartbeat(self) -> None:
        if not self.registered:
            self._try_register()
            return
        sent = time.monotonic()
        try:
            beat = self._store.heartbeat(
                self.id, now=time.time(), ttl=self.ttl, running=self._held.running()
            )
        except errors.LeaseLost:
            self.fence()
            return
        except errors.StoreError as exc:
            self.health.failed("heartbeat", "heartbeat failed", exc)
            return
        self.health.ok("heartbeat")
        if self.expired():
            # The answer came after our deadline: the reaper has killed our tasks meanwhile, so
            # this lease must go too, even though the store still has it.
            self.fence()
            return
        self._set_deadline(sent + self.ttl - 2 * self.interval)
        if beat.drain:
            self.drain_asked.set()
        self._held.cancel(keys=beat.abort)

    def _set_deadline(self, deadline: float) -> None:
        """Our self-fencing deadline; the executor's reaper enforces it too, so the tasks die
        on time even while this process is stopped (SIGSTOP) or hung."""
        self._deadline = deadline
        self._executor.set_deadline(deadline)

    def _sweep(self) -> None:
        try:
            self._store.sweep(now=time.time())
        except errors.StoreError as exc:
            self.health.failed("sweep", "sweep failed", exc)
            return
        self.health.ok("sweep")

    # ------------------------------------------------------------------ fencing

    def fence(self) -> None:
        """The lease may be gone: kill our tasks, record nothing for them, and come back as a
        new worker. Slot threads, the recorder, the claim loop and the heartbeat thread may all
        call it; the first one fences."""
        with self._lock:
            if not self.registered:
                return  # fenced already; registering again
            self.registered = False
            old, self.id = self.id, new_worker_id(self._name)
        logger.warning(
            "self-fencing %s: lease deadline passed or lease lost; abandoning %d task(s)",
            old,
            self._held.running(),
        )
        self._held.fence()
        self._executor.kill_all()
        self._try_register()

    def _try_register(self) -> None:
        try:
            self.register()
        except errors.StoreError as exc:
            self.health.failed("register", "could not register", exc)
