"""SqliteStore: the embedded store, one SQLite file shared by the processes of one host.

Shaped like huey's SqliteStorage: WAL, `synchronous=NORMAL`, a busy timeout, one connection
per store object guarded by a lock (the threads of a process share the object) and one
`BEGIN IMMEDIATE` transaction per method, so each method is atomic across processes. The data
model is described in docs/ARCHITECTURE.md ("SQLite data model").
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from runner import errors
from runner.failpoints import Failpoints
from runner.models import (
    Heartbeat,
    Lease,
    Outcome,
    Plan,
    Run,
    TaskKey,
    WorkerInfo,
)
from runner.store import sqlite_cluster as cluster
from runner.store import sqlite_gc
from runner.store import sqlite_ops as ops
from runner.store import sqlite_queue as queue
from runner.store import sqlite_rows as rows
from runner.store.sqlite_checkpoint import Checkpointer, WriterLock
from runner.store.sqlite_cron import SqliteCronMixin
from runner.store.sqlite_notify import WalWatcher
from runner.store.sqlite_schema import BUSY_TIMEOUT_MS, connect, translate

# How often `wait` looks for commits of other connections (PRAGMA data_version): an idle
# waiter stays under 1% CPU (each wake-up costs ~0.15 ms on a small VM: ~0.75%), and a change
# by another process is seen within ~30 ms.
_POLL = 0.025
_WATCHED = 0.5  # with inotify, a safety-net re-check of data_version this often
_RECHECK = (0.001, 0.004, 0.015, 0.03)


@dataclass(slots=True)
class _Committed:
    changed: bool = False  # the transaction wrote, or saw another connection's commit


@dataclass(slots=True)
class _Finish:
    """A finish waiting for a transaction (see `SqliteStore.finish`)."""

    lease: Lease
    outcome: Outcome
    now: float
    claim: int
    labels: Mapping[str, str] | None
    opened: list[queue.Opened] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class SqliteStore(SqliteCronMixin, cluster.SqliteClusterMixin):
    """The Store protocol on one SQLite file; see runner.store.base.Store for the contract."""

    # W4 in-process: 118 finish transactions of 8-10 attempts for 1,000 tasks instead of 317.
    finish_batch_wait = 0.005

    def __init__(
        self, path: str, *, log_limit: int = 1024 * 1024, failpoints: Failpoints | None = None
    ) -> None:
        self.path = path
        self.log_limit = log_limit
        self._failpoints = failpoints or Failpoints()
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._commits = 0  # transactions that wrote something, through this object
        self._version = 0  # the connection's PRAGMA data_version, last read
        self._polling = False  # a thread in wait() is polling data_version
        self._local = threading.local()  # per thread: (commits, version) last seen
        self._pending: list[_Finish] = []  # finishes waiting for the lock (group commit)
        self._pending_lock = threading.Lock()
        self._db: sqlite3.Connection | None = connect(path, autocheckpoint=False)
        self._checkpointer = Checkpointer(path)  # with the automatic checkpoint off
        self._writer = WriterLock(path, timeout=BUSY_TIMEOUT_MS / 1000)
        # Other processes' commits wake wait() through inotify on the WAL file; without it,
        # wait() polls PRAGMA data_version every _POLL seconds.
        self._watcher = WalWatcher(path)

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the object's lock; sqlite3 errors become StoreError."""
        with self._lock, self._open(write) as (db, done):
            yield db
        if done.changed:
            self._notify()

    @contextmanager
    def _open(self, write: bool) -> Iterator[tuple[sqlite3.Connection, _Committed]]:
        """A transaction; the caller holds `self._lock` (and notifies waiters after releasing
        it when `changed`: `wait()` takes the locks in the other order)."""
        done = _Committed()
        with self._writer.held(write):
            db = self._conn()
            before = db.total_changes
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db, done
                (version,) = db.execute("PRAGMA data_version").fetchone()
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(db)
                raise translate(exc, self.path) from exc
            except BaseException:
                self._rollback(db)
                raise
            wrote = db.total_changes != before
            done.changed = wrote or version != self._version
            self._commits += int(wrote)
            if wrote:
                self._checkpointer.wrote()
            self._version = version
            self._local.seen = (self._commits, version)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise errors.StoreError(f"store {self.path}: used after close()")
        return self._db

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def _refresh(self) -> tuple[int, int]:
        """Read `PRAGMA data_version` (it changes when another connection commits); the
        current (commits through this object, data_version)."""
        with self._lock:
            try:
                (version,) = self._conn().execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
            self._version = int(version)
            return self._commits, self._version

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        plan: Plan,
        *,
        run_id: str,
        now: float,
        key: str | None = None,
        scheduled_time: float | None = None,
    ) -> Run:
        """Store the run and queue its root tasks in one transaction (RunExists if taken)."""
        with self._tx() as db:
            rows.insert_run(
                db, plan, run_id=run_id, now=now, key=key, scheduled_time=scheduled_time
            )
            return rows.read_run(db, run_id, tasks=False)

    def get_run(self, run_id: str, *, tasks: bool = True, now: float | None = None) -> Run:
        """The run with its tasks in plan order and their attempts. Raises RunNotFound."""
        with self._tx(write=False) as db:
            return rows.read_run(db, run_id, tasks=tasks, now=now)

    def list_runs(self, *, workflow: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs newest first (by created_at, then id), without their tasks."""
        with self._tx(write=False) as db:
            return rows.list_runs(db, workflow=workflow, limit=limit)

    def cancel_run(self, run_id: str, *, now: float, reason: str = "cancelled") -> Run:
        """Cancel the run and its not-started tasks; running attempts are flagged for abort."""
        with self._tx() as db:
            rows.cancel(db, run_id, now=now, reason=reason)
            return rows.read_run(db, run_id, tasks=True)

    def retry_run(self, run_id: str, *, now: float, dry_run: bool = False) -> list[str]:
        """Re-run the failed, cancelled and skipped tasks of a finished run; their ids."""
        with self._tx() as db:
            return rows.retry(db, run_id, now=now, dry_run=dry_run)

    def gc(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """Delete finished runs older than `older_than` seconds (see Store.gc)."""
        return sqlite_gc.gc(self._tx, older_than=older_than, now=now, dry_run=dry_run)

    # ------------------------------------------------------------------ workers

    def register_worker(self, info: WorkerInfo, *, now: float, ttl: float) -> None:
        """Open the worker's lease for `ttl` seconds. Attempts left from an expired earlier
        lease under the same id are lost first, so their stale tokens stay fenced off."""
        with self._tx() as db:
            row = db.execute("SELECT expires_at FROM workers WHERE id = ?", (info.id,)).fetchone()
            if row is not None and row[0] <= now:
                self._lose_worker(db, info.id, now=now, counted=True)
            db.execute(
                "INSERT OR REPLACE INTO workers (id, name, host, pid, labels, weight, capacity,"
                " version, running, heartbeat_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    info.id,
                    info.name,
                    info.host,
                    info.pid,
                    json.dumps(info.labels),
                    info.weight,
                    info.capacity,
                    info.version,
                    info.running,
                    now,
                    now + ttl,
                ),
            )

    def heartbeat(self, worker_id: str, *, now: float, ttl: float, running: int) -> Heartbeat:
        """Renew the worker's lease; the attempts it must abort. LeaseLost if expired."""
        with self._tx() as db:
            self._check_worker(db, worker_id, now=now)
            db.execute(
                "UPDATE workers SET heartbeat_at = ?, expires_at = ?, running = ? WHERE id = ?",
                (now, now + ttl, running, worker_id),
            )
            abort = db.execute(
                "SELECT o.run_id, o.task_id FROM ownership o JOIN runs r ON r.id = o.run_id"
                " WHERE o.worker_id = ? AND r.finished_at IS NOT NULL",
                (worker_id,),
            ).fetchall()
            (draining,) = db.execute(
                "SELECT draining FROM workers WHERE id = ?", (worker_id,)
            ).fetchone()
        return Heartbeat(abort=frozenset((r, t) for r, t in abort), drain=bool(draining))

    def deregister_worker(self, worker_id: str, *, now: float) -> None:
        """Close the lease; held attempts go back to the queue as uncounted losses."""
        with self._tx() as db:
            self._lose_worker(db, worker_id, now=now, counted=False)

    def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Live workers (lease not expired), by name."""
        with self._tx(write=False) as db:
            return cluster.live_workers(db, now=now)

    @staticmethod
    def _check_worker(db: sqlite3.Connection, worker_id: str, *, now: float) -> bool:
        """LeaseLost unless the worker's lease is alive; True when it is draining."""
        row = db.execute(
            "SELECT expires_at, draining FROM workers WHERE id = ?", (worker_id,)
        ).fetchone()
        if row is None or row[0] <= now:
            raise errors.WorkerLeaseLost(worker_id)
        return bool(row[1])

    @staticmethod
    def _lose_worker(
        db: sqlite3.Connection, worker_id: str, *, now: float, counted: bool
    ) -> list[TaskKey]:
        tokens = db.execute(
            "SELECT token FROM ownership WHERE worker_id = ? ORDER BY token", (worker_id,)
        ).fetchall()
        lost = [ops.lose_attempt(db, t, now=now, counted=counted) for (t,) in tokens]
        cluster.unassign_worker(db, worker_id)
        db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
        return [key for key in lost if key is not None]

    # ------------------------------------------------------------------ the queue

    def claim(
        self,
        worker_id: str,
        *,
        now: float,
        limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """Take up to `limit` ready tasks: the worker's assignments first, then the shared
        queue, highest priority first, FIFO within a priority. A draining worker gets none."""
        with self._tx() as db:
            if self._check_worker(db, worker_id, now=now):
                return []
            opened = self._claim_in(db, worker_id, now=now, limit=limit, labels=labels)
        if opened:
            self._failpoints.hit("claim.after_commit")
        return [o.lease() for o in opened]

    def _claim_in(
        self,
        db: sqlite3.Connection,
        worker_id: str,
        *,
        now: float,
        limit: int,
        labels: Mapping[str, str] | None,
    ) -> list[queue.Opened]:
        picked = queue.pick(db, worker_id, now=now, limit=limit, labels=labels)
        opened = queue.open_attempts(db, worker_id, picked, now=now)
        if opened:
            self._failpoints.hit("claim.before_commit")
        return opened

    def append_log(self, lease: Lease, text: str) -> None:
        """Append to the attempt's log, keeping the last `log_limit` bytes. LeaseLost if stale."""
        with self._tx() as db:
            queue.check_owner(db, lease)
            rows.append_log(
                db, (lease.run_id, lease.task_id, lease.attempt), text, limit=self.log_limit
            )

    def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """Record how the attempt ended and move the run on, fenced by `lease.token`; with
        `claim`, take the worker's next tasks in the same transaction.

        Group commit: finishes that threads of this process ask for while another one holds
        the store commit in one transaction (a stale token fails only its own: see
        `_finish_in`), which saves a BEGIN/COMMIT and the WAL frames of the pages they share."""
        req = _Finish(lease, outcome, now, claim, labels)
        self._commit_finishes([req])
        if req.error is not None:
            raise req.error
        self._failpoints.hit("finish.after_commit")
        if req.opened:
            self._failpoints.hit("claim.after_commit")
        return [o.lease() for o in req.opened]

    def finish_many(
        self,
        done: Sequence[tuple[Lease, Outcome]],
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[TaskKey], list[Lease]]:
        """See Store.finish_many: one transaction; a stale token fails only its own finish;
        the last one claims."""
        reqs = [_Finish(lease, outcome, now, 0, labels) for lease, outcome in done]
        if reqs:
            reqs[-1].claim = claim
        try:
            self._commit_finishes(reqs)
        except errors.LeaseLost as exc:  # a batch of one raises it
            reqs[0].error = exc
        lost: list[TaskKey] = []
        for r in reqs:
            if isinstance(r.error, errors.LeaseLost):
                lost.append(r.lease.key)
            elif r.error is not None:
                raise r.error
        self._failpoints.hit("finish.after_commit")
        opened = [o for r in reqs for o in r.opened]
        if opened:
            self._failpoints.hit("claim.after_commit")
        return lost, [o.lease() for o in opened]

    def _commit_finishes(self, reqs: list[_Finish]) -> None:
        """Commit `reqs`, with whatever finishes other threads queued meanwhile (group
        commit); each request's error, if any, is left in it."""
        with self._pending_lock:
            self._pending.extend(reqs)
        changed = False
        with self._lock:
            if not all(r.done for r in reqs):
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                ours = {id(r) for r in reqs}
                try:
                    with self._open(True) as (db, done):
                        workers: dict[str, tuple[float, bool] | None] = {}
                        for r in batch:
                            self._finish_in(db, r, workers, alone=len(batch) == 1)
                except BaseException as exc:
                    for r in batch:
                        r.done = True
                        if id(r) not in ours:  # theirs failed with ours: their workers retry
                            r.error = errors.StoreError(f"store {self.path}: {exc}")
                    raise
                for r in batch:
                    r.done = True
                changed = done.changed
        if changed:
            self._notify()

    def _finish_in(
        self,
        db: sqlite3.Connection,
        req: _Finish,
        workers: dict[str, tuple[float, bool] | None],
        *,
        alone: bool,
    ) -> None:
        """One finish inside the open transaction. Its first write, which releases the
        ownership record, is also its fencing check: a stale token writes nothing (so a batch
        needs no savepoints) and fails only its own request. `workers` caches the lease rows
        (expiry, draining) read in this transaction."""
        lease, outcome, now = req.lease, req.outcome, req.now
        if lease.worker_id not in workers:
            workers[lease.worker_id] = queue.worker_lease(db, lease.worker_id)
        worker = workers[lease.worker_id]
        if worker is None or worker[0] <= now or not queue.release_owner(db, lease):
            exc = errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
            if alone:
                raise exc
            req.error, req.opened = exc, []
            return
        if lease.spec.mutex or lease.spec.semaphore:
            cluster.release(db, lease.token)
        if outcome.log_tail:
            key = (lease.run_id, lease.task_id, lease.attempt)
            rows.append_log(db, key, outcome.log_tail, limit=self.log_limit)
        queue.record(db, lease, outcome, now=now)
        self._failpoints.hit("finish.before_commit")
        if req.claim > 0 and not worker[1]:
            req.opened = self._claim_in(
                db, lease.worker_id, now=now, limit=req.claim, labels=req.labels
            )

    def sweep(self, *, now: float) -> list[TaskKey]:
        """Lose the attempts of expired workers and time out runs past their deadline."""
        with self._tx() as db:
            changed: list[TaskKey] = []
            expired = db.execute("SELECT id FROM workers WHERE expires_at <= ?", (now,))
            for (worker_id,) in expired.fetchall():
                changed.extend(self._lose_worker(db, worker_id, now=now, counted=True))
            changed.extend(ops.time_out_runs(db, now=now))
        return changed

    # ------------------------------------------------------------------ logs, waiting

    def get_log(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """The stored log of one attempt (the latest by default); "" if none yet."""
        with self._tx(write=False) as db:
            return rows.read_log(db, run_id, task_id, attempt)

    def wait(self, timeout: float, *, run_id: str | None = None) -> bool:
        """Block until a change this thread has not seen (a commit through this object, another
        connection or another process; of `run_id` or not) or `timeout`; True when a change was
        seen. Commits in this process wake waiters at once; one waiting thread at a time polls
        `PRAGMA data_version` every few milliseconds for other connections' commits."""
        deadline = time.monotonic() + timeout
        seen = getattr(self._local, "seen", None) or self._refresh()
        with self._cond:
            try:
                while (self._commits, self._version) == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if self._polling:
                        self._cond.wait(remaining)  # the polling thread wakes us on a change
                    else:
                        self._poll(min(remaining, _WATCHED if self._watcher.active else _POLL))
                self._local.seen = (self._commits, self._version)
                return True
            finally:
                self._cond.notify_all()  # another waiter may take over polling

    def _poll(self, interval: float) -> None:
        """Wait `interval` (or for a commit), then look for other connections' commits."""
        before = (self._commits, self._version)
        self._polling = True
        try:
            woke = self._wait_for_wal(interval) if self._watcher.active else False
            if not self._watcher.active:
                self._cond.wait(interval)
        finally:
            self._polling = False
        changed = self._db is not None and self._refresh() != before
        # A commit writes the WAL just before it becomes visible in the WAL index: after an
        # inotify wake with no visible change, look again a few times, briefly. (Commits through
        # this object count at once: data_version only moves for other connections' commits.)
        for pause in _RECHECK if woke and not changed else ():
            self._cond.wait(pause)
            if self._db is None or self._refresh() != before:
                changed = True
                break
        if changed:
            self._cond.notify_all()

    def _wait_for_wal(self, interval: float) -> bool:
        self._cond.release()  # in-process commits also write the WAL: inotify sees them
        try:
            return self._watcher.wait(interval)
        finally:
            self._cond.acquire()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._checkpointer.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._watcher.close()
                self._writer.close()
