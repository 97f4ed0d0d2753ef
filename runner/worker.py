"""A worker: claim ready tasks, execute them, keep its lease alive, record results.

One Worker has `concurrency` slots (threads; `call` tasks run in the executor's child
processes). A heartbeat thread renews the worker's lease every TTL/5 and sweeps the store for
dead workers' tasks. Self-fencing: the worker keeps `deadline = send time of the last answered
heartbeat + TTL - 2 heartbeat intervals`; past it, it kills its tasks and records nothing for
them, before the store can have given them to anyone else (GUARANTEES G3, G5).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import runner
from runner import errors, templating
from runner.executor import ExecResult, Executor
from runner.logpump import LogPump
from runner.models import Lease, Outcome, Reason, TaskKey, WorkerInfo
from runner.store.base import Store

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.5  # seconds between sweeps for dead workers' tasks


@dataclass(slots=True)
class _Slot:
    lease: Lease
    cancel: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # fenced or drained: record nothing


class Worker:
    """Serve the store's queue until `stop()`; see the module docstring."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        name: str | None = None,
        concurrency: int = 1,
        lease_ttl: float = 10.0,
        labels: Mapping[str, str] | None = None,
        weight: int = 1,
        drain_timeout: float = 30.0,
        prefetch: int = 0,
    ) -> None:
        self.store = store
        self.executor = executor
        self.name = name or socket.gethostname()
        self.id = f"{self.name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.concurrency = max(1, concurrency)
        self.ttl = lease_ttl
        self.labels = dict(labels or {})
        self.weight = weight
        self.drain_timeout = drain_timeout
        # Like Celery's prefetch: hold up to `prefetch` claimed tasks beyond the busy slots, and
        # claim in batches of at least half of that, so one claim transaction serves several
        # tasks. Held tasks are owned (and lost with the worker) like running ones.
        self.prefetch = max(0, prefetch)
        self._batch = max(1, self.prefetch // 2)
        # With prefetch, a slot hands its attempt's outcome to the recorder thread and starts
        # its next held task at once; the recorder records whatever has piled up in one
        # `finish_many` (one transaction), so the store round overlaps the tasks' execution.
        self._done: list[tuple[_Slot, Outcome]] = []
        self._done_cond = threading.Condition(threading.Lock())
        self._batch_wait = getattr(store, "finish_batch_wait", 0.0)
        self._recorder: threading.Thread | None = None
        self._recorder_stop = False
        self.interval = lease_ttl / 5
        self._slots: dict[TaskKey, _Slot] = {}
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)  # notified when a slot frees
        self._stop = threading.Event()
        self._drain_asked = threading.Event()  # `runner worker drain`, seen in a heartbeat
        self._deadline = 0.0  # monotonic self-fencing deadline
        self._pool = _SlotThreads(self.concurrency, self._execute)
        self._pump = LogPump(store, limit=executor.log_limit)
        self._beat: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self._registered = False

    # ------------------------------------------------------------------ lifecycle

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            labels=self.labels,
            weight=self.weight,
            capacity=self.concurrency,
            version=runner.__version__,
        )

    def _register(self) -> None:
        sent = time.monotonic()
        self.store.register_worker(self.info(), now=time.time(), ttl=self.ttl)
        self._set_deadline(sent + self.ttl - 2 * self.interval)
        self._registered = True
        logger.info("registered worker %s", self.id, extra={"action": "worker_registered"})

    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Claim and execute tasks until `stop()` is called or `until()` is true, then drain."""
        self._register()
        self._beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beat.start()
        if self.prefetch:
            self._recorder = threading.Thread(target=self._record_loop, name="record", daemon=True)
            self._recorder.start()
        try:
            while not self._stop.is_set() and not (until is not None and until()):
                if self._drain_asked.is_set():
                    logger.warning("worker %s: drain requested", self.id)
                    self.drain(self.drain_timeout)
                    break
                if not self._has_room():
                    self._wait_for_room(0.5)  # a slot frees without any store commit
                elif not self._claim_some():
                    self.store.wait(0.5)
        finally:
            self._stop.set()
            self._pool.shutdown()
            self._stop_recorder()
            self._beat_stop.set()
            self._beat.join()
            self._deregister()
            self.executor.set_deadline(None)
            self._pump.close()

    def stop(self) -> None:
        """Stop claiming; running tasks finish (see `drain`)."""
        self._stop.set()
        with self._room:
            self._room.notify_all()

    def abort(self, run_id: str | None = None) -> None:
        """Kill the running attempts (of one run, or all); they finish as cancelled."""
        with self._lock:
            for slot in self._slots.values():
                if run_id is None or slot.lease.run_id == run_id:
                    slot.cancel.set()

    def drain(self, timeout: float) -> None:
        """Stop claiming and give running tasks `timeout` seconds, then return them to the
        queue unrecorded (the store re-queues them when the worker deregisters)."""
        self._stop.set()
        end = time.monotonic() + timeout
        while self.running() and time.monotonic() < end:
            self.store.wait(min(0.5, max(0.0, end - time.monotonic())))
        self._abandon_all()

    def running(self) -> int:
        with self._lock:
            return len(self._slots)

    def _deregister(self) -> None:
        try:
            self.store.deregister_worker(self.id, now=time.time())
        except errors.StoreError as exc:
            logger.warning("could not deregister worker %s: %s", self.id, exc)

    # ------------------------------------------------------------------ claiming

    def _claim_some(self) -> bool:
        """Claim up to the free slots' (and prefetch) worth of tasks; True when something was
        claimed."""
        free = self.concurrency + self.prefetch - self.running()
        if (
            not self._has_room()
            or self._drain_asked.is_set()
            or not self._registered
            or time.monotonic() >= self._deadline
        ):
            return False
        try:
            leases = self.store.claim(self.id, now=time.time(), limit=free, labels=self.labels)
        except errors.LeaseLost:
            self._fence()
            return False
        except errors.StoreError as exc:
            logger.warning("claim failed: %s", exc)
            self._stop.wait(0.5)
            return False
        for lease in leases:
            self._start(lease)
        return bool(leases)

    def _has_room(self) -> bool:
        """With slots idle, room for whatever can be claimed; with every slot busy, room for a
        prefetch batch."""
        held = self.running()
        free = self.concurrency + self.prefetch - held
        return free > 0 and (held < self.concurrency or free >= self._batch)

    def _wait_for_room(self, timeout: float) -> None:
        with self._room:
            self._room.wait_for(lambda: self._stop.is_set() or self._has_room(), timeout)

    # ------------------------------------------------------------------ executing

    def _execute(self, slot: _Slot) -> None:
        """Run the slot's attempt and record it; the same transaction that records it claims
        this slot's next task, which runs here too, with no claim loop round (W1, W2)."""
        next_slot: _Slot | None = slot
        while next_slot is not None:
            next_slot = self._execute_one(next_slot)

    def _execute_one(self, slot: _Slot) -> _Slot | None:
        lease = slot.lease
        logger.info(
            "claimed %s/%s attempt %d",
            lease.run_id,
            lease.task_id,
            lease.attempt,
            extra={"action": "task_claimed", "run_id": lease.run_id},
        )
        if slot.abandoned:  # a prefetched task whose worker fenced or drained meanwhile
            self._forget(slot)
            return None
        started = time.time()  # later than the claim for a prefetched task
        try:
            outcome = self._outcome(self._run_attempt(slot), started)
        except Exception as exc:  # a bug or an unrenderable template: the attempt errs
            logger.exception("attempt %s/%s failed to run", lease.run_id, lease.task_id)
            outcome = Outcome(succeeded=False, reason=Reason.ERROR, error=str(exc))
        rest = self._pump.remove(lease)
        if rest is not None:  # the pump sent the beginning already
            outcome = dataclasses.replace(outcome, log_tail=rest)
        if self._recorder is not None and not slot.abandoned:
            with self._done_cond:
                self._done.append((slot, outcome))
                if len(self._done) in (1, self._batch):  # what the recorder waits for
                    self._done_cond.notify()
            return None  # the slot thread takes the next held task; the recorder records
        leases: list[Lease] = []
        try:
            if not slot.abandoned:
                leases = self._finish(slot, outcome)
        finally:
            next_slot = self._hand_over(slot, leases)
        return next_slot

    def _hand_over(self, slot: _Slot, leases: list[Lease]) -> _Slot | None:
        """The slot's attempt is done: its next task (claimed with the finish) takes the
        slot without waking the claim loop; with none, the slot frees."""
        if not leases:
            self._forget(slot)
            return None
        (lease,) = leases
        nxt = _Slot(lease=lease)
        with self._lock:
            self._slots.pop(slot.lease.key, None)
            self._slots[lease.key] = nxt
            if not self._registered or slot.abandoned:  # fenced meanwhile
                nxt.abandoned = True
        return nxt

    def _chain(self) -> int:
        """How many tasks a finish may claim for its slot: one while claiming is allowed and
        no prefetched task is waiting for a slot."""
        ok = (
            not self._stop.is_set()
            and not self._drain_asked.is_set()
            and self._registered
            and time.monotonic() < self._deadline
            and (self._recorder is not None or self.running() <= self.concurrency)
        )
        return int(ok)

    def _forget(self, slot: _Slot) -> None:
        with self._room:
            self._slots.pop(slot.lease.key, None)
            if self._has_room():  # what the claim loop waits for
                self._room.notify_all()

    def _run_attempt(self, slot: _Slot) -> ExecResult:
        lease = slot.lease
        spec = templating.render_runtime(lease.spec, lease.context)
        env = {
            "RUNNER_RUN_ID": lease.run_id,
            "RUNNER_TASK_ID": lease.task_id,
            "RUNNER_ATTEMPT": str(lease.attempt),
            "RUNNER_FENCING_TOKEN": str(lease.token),
            "RUNNER_WORKER_NAME": self.name,
        }
        name = log_name(lease.run_id, lease.task_id, lease.attempt)
        self._pump.add(lease, self.executor.log_file(name))
        return self.executor.run(spec, env=env, log_name=name, cancel=slot.cancel)

    @staticmethod
    def _outcome(result: ExecResult, started: float) -> Outcome:
        return Outcome(
            succeeded=result.reason is Reason.EXIT and result.exit_code == 0,
            reason=result.reason,
            exit_code=result.exit_code,
            outputs=result.outputs,
            error=result.error,
            log_tail=result.log_tail,
            started_at=started,
        )

    def _finish(self, slot: _Slot, outcome: Outcome) -> list[Lease]:
        """Record the outcome (and claim the slot's next task with it); retry while the store
        is unreachable and the lease may hold."""
        lease = slot.lease
        while not slot.abandoned:
            if time.monotonic() >= self._deadline:  # the reaper fenced: maybe a killed task's
                self._fence()  # and give up the lease, or the attempt would stay ours forever
                return []
            try:
                return self.store.finish(
                    lease, outcome, now=time.time(), claim=self._chain(), labels=self.labels
                )
            except errors.LeaseLost:
                logger.warning("lease lost: %s/%s not recorded", lease.run_id, lease.task_id)
                return []
            except errors.StoreError as exc:
                logger.warning("finish failed, retrying: %s", exc)
                self._stop.wait(0.2)
        return []

    # ------------------------------------------------------------------ recording (prefetch)

    def _record_loop(self) -> None:
        while True:
            with self._done_cond:
                self._done_cond.wait_for(lambda: bool(self._done) or self._recorder_stop)
                if (
                    self._batch_wait > 0
                    and len(self._done) < self._batch
                    and self._pool.backlog() >= self._batch + self.concurrency
                ):
                    # The slots have enough claimed tasks queued to stay busy while a batch
                    # piles up and is recorded, so recording now gains nothing: wait for the
                    # batch, for one transaction (Store.finish_batch_wait).
                    self._done_cond.wait_for(
                        lambda: len(self._done) >= self._batch or self._recorder_stop,
                        self._batch_wait,
                    )
                batch, self._done = self._done, []
            if not batch:
                return  # stopped, and nothing left to record
            self._record(batch)

    def _stop_recorder(self) -> None:
        """Record what the slots left (they have all returned) and end the recorder."""
        if self._recorder is None:
            return
        with self._done_cond:
            self._recorder_stop = True
            self._done_cond.notify()
        self._recorder.join()

    def _record(self, batch: list[tuple[_Slot, Outcome]]) -> None:
        """Record the batch's outcomes in one `finish_many`, claiming the room it frees; the
        claimed tasks go to the slot threads."""
        leases: list[Lease] = []
        try:
            live = [(slot, outcome) for slot, outcome in batch if not slot.abandoned]
            if live:
                leases = self._finish_many(live)
        finally:
            # The claimed tasks take the finished ones' places under one lock hold, so the claim
            # loop is woken only when room is left (not by each slot freeing for a moment).
            with self._room:
                for slot, _ in batch:
                    self._slots.pop(slot.lease.key, None)
                started = [self._hold(lease) for lease in leases]
                if self._has_room():
                    self._room.notify_all()
            for slot in started:
                self._run_held(slot)

    def _finish_many(self, live: list[tuple[_Slot, Outcome]]) -> list[Lease]:
        """As `_finish`, for several attempts in one transaction."""
        while True:
            live = [(slot, outcome) for slot, outcome in live if not slot.abandoned]
            if not live:
                return []
            if time.monotonic() >= self._deadline:
                self._fence()
                return []
            room = self.concurrency + self.prefetch - self.running() + len(live)
            try:
                lost, leases = self.store.finish_many(
                    [(slot.lease, outcome) for slot, outcome in live],
                    now=time.time(),
                    claim=room if self._chain() else 0,
                    labels=self.labels,
                )
            except errors.LeaseLost:
                logger.warning("lease lost: %d attempt(s) not recorded", len(live))
                return []
            except errors.StoreError as exc:
                logger.warning("finish failed, retrying: %s", exc)
                self._beat_stop.wait(0.2)  # set only once the recorder is done
                continue
            for run_id, task_id in lost:
                logger.warning("lease lost: %s/%s not recorded", run_id, task_id)
            return leases

    def _start(self, lease: Lease) -> None:
        """Give a claimed task to the slot threads (or run it here once they are gone)."""
        with self._lock:
            slot = self._hold(lease)
        self._run_held(slot)

    def _hold(self, lease: Lease) -> _Slot:
        """A claimed task's slot, counted as running; the caller holds `self._lock`."""
        slot = _Slot(lease=lease)
        self._slots[lease.key] = slot
        if not self._registered:
            slot.abandoned = True
        return slot

    def _run_held(self, slot: _Slot) -> None:
        if not self._pool.submit(slot):  # claimed just as the worker stopped: run it, then
            self._execute(slot)  # record it

    # ------------------------------------------------------------------ the lease

    def _heartbeat_loop(self) -> None:
        next_beat = next_sweep = time.monotonic()
        while not self._beat_stop.is_set():
            # The deadline first: after a pause past it, our tasks were killed by the reaper and
            # a heartbeat must not make their attempts look alive again.
            if self._registered and time.monotonic() >= self._deadline:
                self._fence()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.interval
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + SWEEP_INTERVAL
            self._beat_stop.wait(max(0.0, min(next_beat, next_sweep) - time.monotonic()))

    def _heartbeat(self) -> None:
        if not self._registered:
            self._try_register()
            return
        sent = time.monotonic()
        try:
            beat = self.store.heartbeat(
                self.id, now=time.time(), ttl=self.ttl, running=self.running()
            )
        except errors.LeaseLost:
            self._fence()
            return
        except errors.StoreError as exc:
            logger.warning("heartbeat failed: %s", exc)
            return
        if time.monotonic() >= self._deadline:
            # The answer came after our deadline: the reaper has killed our tasks meanwhile, so
            # this lease must go too, even though the store still has it.
            self._fence()
            return
        self._set_deadline(sent + self.ttl - 2 * self.interval)
        if beat.drain:
            self._drain_asked.set()
        with self._lock:
            for key in beat.abort:
                if key in self._slots:
                    self._slots[key].cancel.set()

    def _set_deadline(self, deadline: float) -> None:
        """Our self-fencing deadline; the executor's reaper enforces it too, so the tasks die
        on time even while this process is stopped (SIGSTOP) or hung."""
        self._deadline = deadline
        self.executor.set_deadline(deadline)

    def _sweep(self) -> None:
        try:
            self.store.sweep(now=time.time())
        except errors.StoreError as exc:
            logger.warning("sweep failed: %s", exc)

    def _fence(self) -> None:
        """The lease may be gone: kill our tasks, record nothing for them, and come back as a
        new worker. The old lease expires on its own and `sweep` re-queues its attempts. Slot
        threads and the heartbeat thread may both call it; the first one fences."""
        with self._lock:
            if not self._registered:
                return  # fenced already; registering again
            self._registered = False
            old, self.id = self.id, f"{self.name}-{os.getpid()}-{secrets.token_hex(3)}"
        logger.warning(
            "self-fencing %s: lease deadline passed or lease lost; abandoning %d task(s)",
            old,
            self.running(),
        )
        self._abandon_all()
        self._try_register()

    def _abandon_all(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                slot.abandoned = True
                slot.cancel.set()
        self.executor.kill_all()

    def _try_register(self) -> None:
        try:
            self._register()
        except errors.StoreError as exc:
            logger.warning("could not register: %s", exc)


class _SlotThreads:
    """`n` threads that run the claimed tasks put in one queue (a thread pool without futures:
    nothing waits for a task's result, the slot records it)."""

    def __init__(self, n: int, run: Callable[[_Slot], None]) -> None:
        self._n = n
        self._run = run
        self._queue: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def backlog(self) -> int:
        """How many queued tasks wait for a slot thread (approximately)."""
        return self._queue.qsize()

    def submit(self, slot: _Slot) -> bool:
        """Queue the slot's task; False once `shutdown` began (the caller runs it)."""
        with self._lock:
            if self._closed:
                return False
            if not self._threads:
                for i in range(self._n):
                    thread = threading.Thread(target=self._loop, name=f"slot_{i}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._queue.put(slot)
        return True

    def shutdown(self) -> None:
        """Let the threads run what is queued, then end them."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while (slot := self._queue.get()) is not None:
            try:
                self._run(slot)
            except Exception:  # a bug: log it, keep the slot thread serving
                logger.exception("slot thread: running %s failed", slot.lease.key)


def log_name(run_id: str, task_id: str, attempt: int) -> str:
    """The executor's log name of an attempt: `<run>/<task>.<attempt>` (one folder per run)."""
    safe = task_id.replace("/", "_")
    return f"{run_id}/{safe}.{attempt}"
