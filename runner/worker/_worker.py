"""The Worker: builds the thread roles, runs the claim loop, and shuts them down in order."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import runner
from runner.logpump import LogPump
from runner.models import WorkerInfo
from runner.store.base import Store
from runner.worker._cache import CacheCheck
from runner.worker._claim import ClaimLoop
from runner.worker._finish import Finisher
from runner.worker._held import AttemptExecutor, Held
from runner.worker._lease import LeaseKeeper
from runner.worker._slots import SlotThreads
from runner.worker._subrun import SubRuns

logger = logging.getLogger(__name__)

STOP_JOIN = 1.0  # seconds `run` waits for the idle thread's last store wait, at most


class Worker:
    """Serve the store's queue until `stop()`; see the package docstring."""

    def __init__(
        self,
        store: Store,
        executor: AttemptExecutor,
        *,
        name: str | None = None,
        concurrency: int = 1,
        lease_ttl: float = 10.0,
        labels: Mapping[str, str] | None = None,
        weight: int = 1,
        drain_timeout: float = 30.0,
        prefetch: int | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.name = name or socket.gethostname()
        self.labels = dict(labels or {})
        self.weight = weight
        self.drain_timeout = drain_timeout
        self._held = Held(concurrency=concurrency, prefetch=prefetch)
        self.concurrency = self._held.concurrency
        self._lease = LeaseKeeper(
            store, executor, self._held, name=self.name, info=self.info, ttl=lease_ttl
        )
        self._claims = ClaimLoop(store, self._held, self._lease, labels=self.labels)
        finisher = Finisher(
            store, self._held, self._lease, labels=self.labels, may_claim=self._claims.may_claim
        )
        self._pump = LogPump(store, limit=executor.log_limit)
        self._slots = SlotThreads(
            self._held,
            executor,
            finisher,
            self._pump,
            worker_name=self.name,
            batch_wait=getattr(store, "finish_batch_wait", 0.0),
            cache=CacheCheck(store),
            subruns=SubRuns(store),
        )

    @property
    def prefetch(self) -> int:
        """Claimed tasks the worker may hold beyond its busy slots now (adaptive unless fixed
        by the `prefetch` argument; see `_depth`)."""
        return self._held.prefetch

    @property
    def id(self) -> str:
        """The worker's current id; a new one after each self-fencing."""
        return self._lease.id

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self._lease.id,
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            labels=self.labels,
            weight=self.weight,
            capacity=self.concurrency,
            version=runner.__version__,
        )

    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Claim and execute tasks until `stop()` is called or `until()` is true, then drain."""
        self._lease.register()
        self._lease.start()
        self._slots.start()
        try:
            if self._claims.run(self._slots, until=until):
                logger.warning("worker %s: drain requested", self.id)
                self.drain(self.drain_timeout)
        finally:
            self._claims.stop()
            self._slots.shutdown()  # the slots finish, then the recorder records what they left
            self._lease.close()  # a store change: the idle thread's wait returns
            self._claims.join(STOP_JOIN)
            self._pump.close()

    def stop(self) -> None:
        """Stop claiming; running tasks finish (see `drain`)."""
        self._claims.stop()

    def abort(self, run_id: str | None = None) -> None:
        """Kill the running attempts (of one run, or all); they finish as cancelled."""
        self._held.cancel(run_id=run_id)

    def drain(self, timeout: float) -> None:
        """Stop claiming and give running tasks `timeout` seconds, then return them to the
        queue unrecorded (the store re-queues them when the worker deregisters)."""
        self._claims.stop()
        end = time.monotonic() + timeout
        while self.running() and time.monotonic() < end:
            self.store.wait(min(0.5, max(0.0, end - time.monotonic())))
        self._held.abandon_all()
        self.executor.kill_all()

    def store_failing_for(self) -> float:
        """Seconds the longest failing kind of store call (finish, heartbeat, ...) has been
        failing; 0 while the store works."""
        return self._lease.health.failing_for()

    def running(self) -> int:
        """How many attempts the worker holds (running, queued for a slot, being recorded)."""
        return self._held.running()
