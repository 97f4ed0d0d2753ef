"""The slot threads: run each held attempt, then record it or hand it to the recorder."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time

from runner import templating
from runner.executor import ExecResult
from runner.logpump import LogPump
from runner.models import Kind, Lease, Outcome, Reason
from runner.worker._cache import CacheCheck
from runner.worker._finish import Finisher
from runner.worker._held import AttemptExecutor, Held, Slot
from runner.worker._recorder import Recorder
from runner.worker._subrun import SubRuns

logger = logging.getLogger(__name__)

LAST = 2**63  # the queue order of the shutdown marks: after every task


def log_name(run_id: str, task_id: str, attempt: int) -> str:
    """The executor's log name of an attempt: `<run>/<task>.<attempt>` (one folder per run)."""
    safe = task_id.replace("/", "_")
    return f"{run_id}/{safe}.{attempt}"


class SlotThreads:
    """`concurrency` threads that run the held tasks put in one queue (a thread pool without
    futures: nothing waits for a task's result, the slot records it).

    Without prefetch a slot records its attempt itself with `Finisher.finish`, which claims the
    slot's next task in the same transaction; that task runs on the same thread with no claim
    loop round (W1, W2). With prefetch a slot hands its outcome to the `Recorder` and takes its
    next held task at once.
    """

    def __init__(
        self,
        held: Held,
        executor: AttemptExecutor,
        finisher: Finisher,
        pump: LogPump,
        *,
        worker_name: str,
        batch_wait: float,
        cache: CacheCheck | None = None,
        subruns: SubRuns | None = None,
    ) -> None:
        self._held = held
        self._cache = cache  # None: cached tasks always run
        self._subruns = subruns  # None: `workflow:` tasks fail
        self._executor = executor
        self._finisher = finisher
        self._pump = pump
        self._worker_name = worker_name
        self.recorder = (
            Recorder(finisher, held, self, batch_wait=batch_wait)
            if held.depth.may_prefetch
            else None
        )
        # Held tasks wait for a slot highest priority first, then in claim order: a task
        # claimed at a higher priority runs before the lower ones held already.
        self._queue: queue.PriorityQueue[tuple[int, int, Slot | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the recorder; the slot threads start with the first task."""
        if self.recorder is not None:
            self.recorder.start()

    def backlog(self) -> int:
        """How many queued tasks wait for a slot thread (approximately)."""
        return self._queue.qsize()

    def run(self, slot: Slot) -> None:
        """Queue a held task for the slot threads, or run it here once they are shut down."""
        if not self._submit(slot):  # claimed just as the worker stopped: run it, then
            self._execute(slot)  # record it

    def shutdown(self) -> None:
        """Let the threads run what is queued and end them; then the recorder records what
        they left, and ends."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put((LAST, next(self._order), None))  # after every queued task
        for thread in self._threads:
            thread.join()
        if self.recorder is not None:
            self.recorder.stop()

    def _submit(self, slot: Slot) -> bool:
        with self._lock:
            if self._closed:
                return False
            if not self._threads:
                for i in range(self._held.concurrency):
                    thread = threading.Thread(target=self._loop, name=f"slot_{i}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._queue.put((-slot.lease.spec.priority, next(self._order), slot))
        return True

    def _loop(self) -> None:
        while (slot := self._queue.get()[2]) is not None:
            try:
                self._execute(slot)
            except Exception:  # a bug: log it, keep the slot thread serving
                logger.exception("slot thread: running %s failed", slot.lease.key)

    # ------------------------------------------------------------------ one attempt

    def _execute(self, slot: Slot) -> None:
        """Run the slot's attempt, record it, and run the task its finish handed over."""
        next_slot: Slot | None = slot
        while next_slot is not None:
            next_slot = self._execute_one(next_slot)

    def _execute_one(self, slot: Slot) -> Slot | None:
        lease = slot.lease
        logger.info(
            "claimed %s/%s attempt %d",
            lease.run_id,
            lease.task_id,
            lease.attempt,
            extra={"action": "task_claimed", "run_id": lease.run_id},
        )
        if slot.abandoned:  # a prefetched task whose worker fenced or drained meanwhile
            self._held.forget(slot)
            return None
        began = time.monotonic()
        outcome = self._attempt(slot)
        self._held.task_took(time.monotonic() - began)
        if self.recorder is not None and self._held.prefetch > 0 and not slot.abandoned:
            self.recorder.put(slot, outcome)
            return None  # the slot thread takes the next held task; the recorder records
        leases: list[Lease] = []
        try:
            if not slot.abandoned:
                leases = self._finisher.finish(slot, outcome)
        finally:
            next_slot = self._hand_over(slot, leases)
        return next_slot

    def _hand_over(self, slot: Slot, leases: list[Lease]) -> Slot | None:
        """The slot's attempt is done: its next task (claimed with the finish) takes the
        slot without waking the claim loop; with none, the slot frees."""
        if not leases:
            self._held.forget(slot)
            return None
        (lease,) = leases
        return self._held.hand_over(slot, lease)

    def _attempt(self, slot: Slot) -> Outcome:
        lease = slot.lease
        started = time.time()  # later than the claim for a prefetched task
        if self._cache is not None and lease.spec.cache is not None:
            hit = self._cache.lookup(lease, now=started)
            if hit is not None:  # restored: no process starts
                return hit
        try:
            if lease.spec.kind is Kind.WORKFLOW:
                outcome = self._sub_run(slot, started)
            else:
                outcome = _outcome(self._run_attempt(slot), started)
        except Exception as exc:  # a bug or an unrenderable template: the attempt errs
            logger.exception("attempt %s/%s failed to run", lease.run_id, lease.task_id)
            outcome = Outcome(succeeded=False, reason=Reason.ERROR, error=str(exc))
        rest = self._pump.remove(lease)
        if rest is not None:  # the pump sent the beginning already
            outcome = dataclasses.replace(outcome, log_tail=rest)
        if self._cache is not None and outcome.succeeded and lease.spec.cache is not None:
            self._cache.remember(lease, outcome, now=time.time())
        return outcome

    def _sub_run(self, slot: Slot, started: float) -> Outcome:
        if self._subruns is None:
            return Outcome(succeeded=False, reason=Reason.ERROR, error="sub-runs not enabled")
        outcome = self._subruns.run(slot.lease, slot.cancel, now=started)
        return dataclasses.replace(outcome, started_at=started)

    def _run_attempt(self, slot: Slot) -> ExecResult:
        lease = slot.lease
        spec = templating.render_runtime(lease.spec, lease.context)
        env = {
            "RUNNER_RUN_ID": lease.run_id,
            "RUNNER_TASK_ID": lease.task_id,
            "RUNNER_ATTEMPT": str(lease.attempt),
            "RUNNER_FENCING_TOKEN": str(lease.token),
            "RUNNER_WORKER_NAME": self._worker_name,
        }
        name = log_name(lease.run_id, lease.task_id, lease.attempt)
        self._pump.add(lease, self._executor.log_file(name))
        return self._executor.run(spec, env=env, log_name=name, cancel=slot.cancel)


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
