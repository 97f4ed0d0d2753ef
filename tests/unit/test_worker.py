"""The Worker in-process, on a real SqliteStore in tmp_path, with a small fake executor.

The fake runs no process: it records each attempt it was given, returns a result the test
controls, and can hold an attempt until the test releases it (or the worker cancels or kills
it). Waits are on events and store changes with deadlines, never bare sleeps.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.errors import StoreError
from runner.executor import ExecResult
from runner.models import AttemptState, Lease, Outcome, Plan, Reason, TaskKey, TaskSpec
from runner.store.sqlite import SqliteStore
from runner.worker import AttemptExecutor, Worker
from runner.worker._health import StoreHealth
from tests.contract import plans

WAIT = 20.0  # seconds any one wait may take before the test fails


@dataclass(frozen=True, slots=True, kw_only=True)
class Ran:
    task: str
    attempt: int
    token: int
    thread: str


class FakeExecutor:
    """The executor interface the worker uses (`AttemptExecutor`), without processes."""

    log_limit = 4096

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._cond = threading.Condition()
        self.ran: list[Ran] = []
        self.ended: list[Ran] = []
        self.gates: dict[str, threading.Event] = {}  # task id -> its attempts wait for it
        self.killed = threading.Event()  # kill_all was called
        self.deadlines: list[float | None] = []

    def hold(self, *task_ids: str) -> threading.Event:
        """Hold these tasks' attempts until the returned event is set."""
        gate = threading.Event()
        for task_id in task_ids:
            self.gates[task_id] = gate
        return gate

    def log_file(self, log_name: str) -> str:
        return str(self._log_dir / f"{log_name}.log")

    def run(
        self,
        spec: TaskSpec,
        *,
        env: Mapping[str, str],
        log_name: str,
        cancel: threading.Event,
    ) -> ExecResult:
        ran = Ran(
            task=spec.id,
            attempt=int(env["RUNNER_ATTEMPT"]),
            token=int(env["RUNNER_FENCING_TOKEN"]),
            thread=threading.current_thread().name,
        )
        with self._cond:
            self.ran.append(ran)
            self._cond.notify_all()
        gate = self.gates.get(spec.id)
        end = time.monotonic() + WAIT
        while gate is not None and not gate.is_set() and not cancel.is_set():
            assert time.monotonic() < end, f"{spec.id} was never released"
            gate.wait(0.005)
        with self._cond:
            self.ended.append(ran)
            self._cond.notify_all()
        # Success whether or not the worker cancelled it: a fenced attempt must record nothing
        # even when its result looks good.
        return ExecResult(exit_code=0, reason=Reason.EXIT, outputs={"token": str(ran.token)})

    def wait_ran(self, n: int, *, ended: bool = False) -> None:
        """Wait until `n` attempts started (or ended)."""
        seen = self.ended if ended else self.ran
        with self._cond:
            assert self._cond.wait_for(lambda: len(seen) >= n, WAIT), (self.ran, self.ended)

    def set_deadline(self, deadline: float | None) -> None:
        self.deadlines.append(deadline)

    def kill_all(self) -> None:
        self.killed.set()

    def close(self, *, wait: bool = True) -> None: ...


class CountingStore(SqliteStore):
    """A real SqliteStore that counts the tasks each claim and finish call hands back."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.claimed: list[int] = []  # leases per claim call that returned some
        self.finished: list[int] = []  # attempts sent per finish / finish_many call
        self.handed: list[int] = []  # leases per finish / finish_many call that returned some

    def claim(
        self,
        worker_id: str,
        *,
        now: float,
        limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        leases = super().claim(worker_id, now=now, limit=limit, labels=labels)
        if leases:
            self.claimed.append(len(leases))
        return leases

    def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        self.finished.append(1)
        leases = super().finish(lease, outcome, now=now, claim=claim, labels=labels)
        self._handed(leases)
        return leases

    def finish_many(
        self,
        done: Sequence[tuple[Lease, Outcome]],
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[TaskKey], list[Lease]]:
        self.finished.append(len(done))
        lost, leases = super().finish_many(done, now=now, claim=claim, labels=labels)
        self._handed(leases)
        return lost, leases

    def _handed(self, leases: list[Lease]) -> None:
        if leases:
            self.handed.append(len(leases))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    s = CountingStore(str(tmp_path / "state.db"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def executor(tmp_path: Path) -> FakeExecutor:
    return FakeExecutor(tmp_path / "logs")


class Serving:
    """A worker running in a thread; `stop` stops it and waits for `run` to return."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.worker.run()
        finally:
            self.done.set()

    def stop(self) -> None:
        self.worker.stop()
        assert self.done.wait(WAIT), "the worker did not stop"


@pytest.fixture
def serve() -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(store: SqliteStore, executor: AttemptExecutor, **options: Any) -> Serving:
        serving = Serving(Worker(store, executor, name="w", **options))
        started.append(serving)
        return serving

    yield start
    for serving in started:
        serving.stop()


def submit(store: SqliteStore, plan: Plan) -> str:
    run_id = plans.new_run_id()
    store.create_run(plan, run_id=run_id, now=time.time())
    return run_id


def wait_run_done(store: SqliteStore, run_id: str) -> None:
    end = time.monotonic() + WAIT
    while store.get_run(run_id, tasks=False).finished_at is None:
        assert time.monotonic() < end, plans.states(store, run_id)
        store.wait(0.5)


def only_task(
    store: SqliteStore, run_id: str
) -> tuple[list[tuple[AttemptState, int]], dict[str, str]]:
    """The attempts (state, token) and outputs of a one-task run."""
    (task,) = store.get_run(run_id).tasks
    return [(a.state, a.token) for a in task.attempts], task.outputs


# ---------------------------------------------------------------------- hand-over


def test_worker_runs_a_successor_handed_over_by_finish_without_a_claim(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.linear(3))
    serving = serve(store, executor, concurrency=1)
    wait_run_done(store, run_id)
    serving.stop()
    assert plans.states(store, run_id) == {t: "succeeded" for t in ("t0", "t1", "t2")}
    assert [r.task for r in executor.ran] == ["t0", "t1", "t2"]
    assert store.claimed == [1]  # t0 only; t1 and t2 came with the finishes
    assert store.handed == [1, 1]
    assert len({r.thread for r in executor.ran}) == 1  # on the slot thread that finished


# ---------------------------------------------------------------------- prefetch


def test_worker_prefetch_claims_and_records_in_batches(
    tmp_path: Path, store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(20))
    gate = executor.hold(*(f"t{i}" for i in range(20)))
    serving = serve(store, executor, concurrency=2, prefetch=8)
    executor.wait_ran(2)  # both slots busy, the rest of the batch held
    assert store.claimed == [10]  # one claim: 2 slots + 8 prefetched
    assert serving.worker.running() == 10
    # Keep the store busy while the held tasks run: their outcomes pile up for the recorder.
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        gate.set()
        executor.wait_ran(10, ended=True)
    finally:
        db.execute("ROLLBACK")
        db.close()
    wait_run_done(store, run_id)
    serving.stop()
    assert set(plans.states(store, run_id).values()) == {"succeeded"}
    assert sorted(r.task for r in executor.ran) == sorted(f"t{i}" for i in range(20))
    assert sum(store.finished) == 20
    assert max(store.finished) >= 8  # the piled-up outcomes went in one finish_many
    assert len(store.finished) < 20
    # every claim after the first came with a finish: the recorder claims the room it frees
    assert store.claimed == [10]
    assert sum(store.handed) == 10


# ---------------------------------------------------------------------- drain


def test_worker_drain_lets_running_tasks_finish_and_claims_nothing_more(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(5))
    gate = executor.hold(*(f"t{i}" for i in range(5)))
    serving = serve(store, executor, concurrency=2, lease_ttl=1.0)
    executor.wait_ran(2)
    assert store.drain_worker("w", now=time.time()) == [serving.worker.id]
    gate.set()
    assert serving.done.wait(WAIT), "the worker did not drain"
    done = {t: s for t, s in plans.states(store, run_id).items() if s == "succeeded"}
    assert sorted(done) == sorted(r.task for r in executor.ran)
    assert len(executor.ran) == 2
    assert sorted(plans.states(store, run_id).values()) == ["ready"] * 3 + ["succeeded"] * 2
    assert store.list_workers(now=time.time()) == []  # deregistered


def test_worker_drain_timeout_returns_unfinished_tasks_unrecorded(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(1))
    executor.hold("t0")  # never released: the drain kills it
    serving = serve(store, executor, concurrency=1)
    executor.wait_ran(1)
    serving.worker.drain(0.0)
    executor.wait_ran(1, ended=True)
    serving.stop()
    assert executor.killed.is_set()
    assert store.finished == []
    # deregistering gave the attempt back: lost, not counted, queued again
    assert plans.states(store, run_id) == {"t0": "ready"}
    assert [state for state, _ in only_task(store, run_id)[0]] == [AttemptState.LOST]


# ---------------------------------------------------------------------- fencing


def take_lease(store: SqliteStore, worker_id: str) -> None:
    """End the worker's lease behind its back, as a sweep in another process that saw its
    heartbeat stop for its TTL (a pause) would: its row goes, its attempts are lost. Leases
    expire by the observer's monotonic clock, so no `now` passed here can do it."""
    store.deregister_worker(worker_id, now=time.time())


def test_worker_fences_when_its_lease_expired_and_records_nothing(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(1))
    gate = executor.hold("t0")
    serving = serve(store, executor, concurrency=1, lease_ttl=2.0)
    executor.wait_ran(1)
    first_id = serving.worker.id
    take_lease(store, first_id)  # the lease has expired: attempt 1 is lost
    assert executor.killed.wait(WAIT)  # the next heartbeat fenced: the attempt is killed
    executor.wait_ran(1, ended=True)
    gate.set()  # attempt 2 (by the worker's new lease) runs through
    wait_run_done(store, run_id)
    serving.stop()
    assert serving.worker.id != first_id
    (stale, fresh), outputs = only_task(store, run_id)
    assert stale[0] is AttemptState.LOST
    assert fresh[0] is AttemptState.SUCCEEDED
    assert outputs == {"token": str(fresh[1])}
    assert store.finished == [1]  # attempt 1's result was never sent
    assert [r.token for r in executor.ran] == [stale[1], fresh[1]]


def test_worker_stale_finish_records_nothing_and_the_newer_owner_stands(
    store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(1))
    gate = executor.hold("t0")
    # A long lease: no heartbeat comes between the takeover and the stale finish.
    serving = serve(store, executor, concurrency=1, lease_ttl=60.0)
    executor.wait_ran(1)
    take_lease(store, serving.worker.id)
    newer = plans.worker(store, "newer", now=time.time())
    lease = plans.claim_one(store, newer, now=time.time())
    store.finish(lease, plans.ok(by="newer"), now=time.time())
    gate.set()  # the stale attempt ends and tries to record its result
    executor.wait_ran(1, ended=True)
    serving.stop()
    (stale, fresh), outputs = only_task(store, run_id)
    assert stale[0] is AttemptState.LOST
    assert fresh == (AttemptState.SUCCEEDED, lease.token)
    assert outputs == {"by": "newer"}
    assert store.finished == [1, 1]  # the newer owner's, then the refused stale one


def test_worker_fences_at_its_deadline_when_heartbeats_go_unanswered(
    tmp_path: Path, store: CountingStore, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    run_id = submit(store, plans.fan_out(1))
    gate = executor.hold("t0")
    serving = serve(store, executor, concurrency=1, lease_ttl=1.0)
    executor.wait_ran(1)
    first_id = serving.worker.id
    # The store stops answering: the heartbeats block until the deadline has passed.
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        deadline = executor.deadlines[-1]
        assert deadline is not None
        end = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # the deadline is the event awaited here
            assert time.monotonic() < end
            executor.killed.wait(deadline - time.monotonic())
        gate.set()  # the attempt ends after the deadline: its result must not be recorded
        assert executor.killed.wait(WAIT)  # fenced
    finally:
        db.execute("ROLLBACK")
        db.close()
    wait_run_done(store, run_id)  # the old lease expires; the new identity runs attempt 2
    serving.stop()
    assert serving.worker.id != first_id
    (stale, fresh), outputs = only_task(store, run_id)
    assert stale[0] is AttemptState.LOST
    assert fresh[0] is AttemptState.SUCCEEDED
    assert outputs == {"token": str(fresh[1])}
    assert store.finished == [1]


class FencingStore(CountingStore):
    """A claim whose answer arrives after the worker fenced and registered again: `fence` is
    called between the claim's commit and its return, the interleaving of the race."""

    fence: Callable[[], None] | None = None

    def claim(
        self,
        worker_id: str,
        *,
        now: float,
        limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        leases = super().claim(worker_id, now=now, limit=limit, labels=labels)
        fence, self.fence = self.fence, None
        if leases and fence is not None:
            fence()
        return leases


def test_worker_abandons_a_claim_that_returns_after_it_registered_again(
    tmp_path: Path, executor: FakeExecutor, serve: Callable[..., Serving]
) -> None:
    store = FencingStore(str(tmp_path / "state.db"))
    try:
        run_id = submit(store, plans.fan_out(1))
        started: list[Serving] = []
        ready = threading.Event()

        def fence() -> None:
            assert ready.wait(WAIT)
            worker = started[0].worker
            first_id = worker.id
            worker._lease.fence()  # the race: the claim is in flight
            assert worker.id != first_id

        store.fence = fence
        serving = serve(store, executor, concurrency=1, lease_ttl=1.0)
        started.append(serving)
        ready.set()
        wait_run_done(store, run_id)  # the old lease expires; the new id runs attempt 2
        serving.stop()
        (old, new), outputs = only_task(store, run_id)
        assert old[0] is AttemptState.LOST  # held under the old lease, never run
        assert new[0] is AttemptState.SUCCEEDED
        assert [r.token for r in executor.ran] == [new[1]]
        assert outputs == {"token": str(new[1])}
    finally:
        store.close()


def test_store_health_logs_a_repeating_error_once_and_times_the_longest_failing_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = StoreHealth()
    full = StoreError("store s.db: the disk is full")
    with caplog.at_level("WARNING"):
        for _ in range(100):  # a finish retried in a loop, as on a full disk
            health.failed("finish", "finish failed, retrying", full)
        health.ok("claim")  # an empty claim gets through: the finishes still fail
    assert [r.getMessage() for r in caplog.records] == [f"finish failed, retrying: {full}"]
    assert health.failing_for() > 0
    health.ok("finish")
    assert health.failing_for() == 0
