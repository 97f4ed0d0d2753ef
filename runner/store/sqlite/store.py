"""SqliteStore: the embedded store, one SQLite file shared by the processes of one host.

WAL, `synchronous=NORMAL`, a busy timeout, one connection per store object guarded by a lock and
one `BEGIN IMMEDIATE` transaction per method (`db.Database`); each method delegates to the
module of its protocol section. The data model is described in docs/ARCHITECTURE.md ("SQLite
data model").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from runner import dispatch, errors, interrupts
from runner.failpoints import Failpoints
from runner.models import (
    CacheEntry,
    CronEntry,
    DispatchView,
    Heartbeat,
    HookDelivery,
    HookState,
    Lease,
    LockInfo,
    Outcome,
    Plan,
    Run,
    TaskKey,
    TaskState,
    WorkerInfo,
)
from runner.store.sqlite import (
    cache,
    claim,
    cluster,
    finish,
    flow,
    gc,
    hooks,
    logs,
    notify,
    observe,
    runs,
    schedules,
    workers,
)
from runner.store.sqlite.db import Database


class SqliteStore:
    """The Store protocol on one SQLite file; see runner.store.base.Store for the contract."""

    # How long a worker gathers finishes for one finish_many (see docs/PERFORMANCE.md).
    finish_batch_wait = 0.005
    finish_claims_queue = True
    summary_counts_tasks = False

    def __init__(
        self, path: str, *, log_limit: int = 1024 * 1024, failpoints: Failpoints | None = None
    ) -> None:
        self.path = path
        self.log_limit = log_limit
        self._failpoints = failpoints or Failpoints()
        self.db = Database(path)
        self.group = finish.GroupCommit(self.db, log_limit=log_limit, failpoints=self._failpoints)
        # Other processes' commits wake wait() through inotify on the WAL file; without it,
        # wait() polls PRAGMA data_version.
        self._waiter = notify.Waiter(self.db)
        # liveness and clock disagreement as this object measures them (docs/RELIABILITY.md)
        self._clocks = observe.Clocks()

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
        with self.db.tx() as db:
            self._clocks.refresh_from(db, now=now)
            run = runs.create_run(
                db, plan, run_id=run_id, now=now, key=key, scheduled_time=scheduled_time
            )
            if self._clocks.ahead:  # a later live clock must not see the deadline cut
                flow.push_deadline(db, run_id, by=self._clocks.ahead)
        self._failpoints.hit("create_run.after_commit")
        return run

    def get_run(
        self,
        run_id: str,
        *,
        tasks: bool = True,
        now: float | None = None,
        states: Collection[TaskState] | None = None,
    ) -> Run:
        """The run with its tasks in plan order and their attempts. Raises RunNotFound."""
        with self.db.tx(write=False) as db:
            return runs.read_run(db, run_id, tasks=tasks, now=now, states=states)

    def list_runs(self, *, workflow: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs newest first (by created_at, then id), without their tasks."""
        with self.db.tx(write=False) as db:
            return runs.list_runs(db, workflow=workflow, limit=limit)

    def cancel_run(self, run_id: str, *, now: float, reason: str = "cancelled") -> Run:
        """Cancel the run and its not-started tasks; running attempts are flagged for abort."""
        self._failpoints.hit("cancel_run.before")
        with self.db.tx() as db:
            runs.cancel(db, run_id, now=now, reason=reason)
            return runs.read_run(db, run_id, tasks=True)

    def retry_run(self, run_id: str, *, now: float, dry_run: bool = False) -> list[str]:
        """Re-run the failed, cancelled and skipped tasks of a finished run; their ids."""
        with self.db.tx() as db:
            self._clocks.refresh_from(db, now=now)
            again = runs.retry(db, run_id, now=now, dry_run=dry_run)
            if again and not dry_run and self._clocks.ahead:
                flow.push_deadline(db, run_id, by=self._clocks.ahead)
            return again

    def gc(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """Delete finished runs older than `older_than` seconds (see Store.gc)."""
        return gc.gc(self.db.tx, older_than=older_than, now=now, dry_run=dry_run)

    # ------------------------------------------------------------------ workers

    def register_worker(self, info: WorkerInfo, *, now: float, ttl: float) -> None:
        """Open the worker's lease for `ttl` seconds (see Store.register_worker)."""
        with self.db.tx() as db:
            beats = workers.register_worker(db, info, now=now, ttl=ttl)
            self._clocks.observer.wrote(info.id, beats=beats, ttl=ttl)

    def heartbeat(self, worker_id: str, *, now: float, ttl: float, running: int) -> Heartbeat:
        """Renew the worker's lease; the attempts it must abort. WorkerLeaseLost if it
        expired: swept, or not renewed for its ttl of this process's monotonic clock."""
        if self._clocks.expired(worker_id):
            raise errors.WorkerLeaseLost(worker_id)
        with self.db.tx() as db:
            self._clocks.refresh_from(db, now=now, force=True)
            skew = self._clocks.skew(worker_id)
            beat, beats = workers.heartbeat(
                db, worker_id, now=now, ttl=ttl, running=running, skew=skew
            )
            self._clocks.observer.wrote(worker_id, beats=beats, ttl=ttl)
            return beat

    def deregister_worker(self, worker_id: str, *, now: float) -> None:
        """Close the lease; held attempts go back to the queue as uncounted losses."""
        with self.db.tx() as db:
            workers.lose_worker(db, worker_id, now=now, counted=False)
            self._clocks.observer.forget(worker_id)

    def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Live workers: registered, not swept, and not seen unchanged for their ttl by this
        object (runner.store.liveness), by name."""
        with self.db.tx(write=False) as db:
            self._clocks.refresh_from(db, now=now, force=True)
            return workers.live_workers(db, now=now, dead=self._clocks.observer.dead_ids())

    def sweep(self, *, now: float) -> list[TaskKey]:
        """Lose the attempts of the workers whose heartbeat this object saw unchanged for
        their ttl, and time out runs past their deadline by the earliest live clock."""
        with self.db.tx() as db:
            self._clocks.refresh_from(db, now=now, force=True)
            dead = self._clocks.observer.dead_ids()
            changed = workers.sweep(db, now=now, dead=dead, due=now + self._clocks.behind)
            for worker_id in dead:
                self._clocks.observer.forget(worker_id)
            return changed

    # ------------------------------------------------------------------ claim, finish

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
        if self._clocks.expired(worker_id):
            raise errors.WorkerLeaseLost(worker_id)
        with self.db.tx() as db:
            self._clocks.refresh_from(db, now=now)
            due = now + self._clocks.behind  # backoffs end by the earliest live clock
            opened = claim.claim(
                db, worker_id, now=due, limit=limit, labels=labels, failpoints=self._failpoints
            )
        return claim.leases(opened, self._failpoints)

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
        `claim`, take the worker's next tasks in the same transaction (group commit with the
        finishes of other threads: see runner.store.sqlite.finish)."""
        if self._clocks.expired(lease.worker_id):
            raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
        clocks = self._clocks
        req = finish.Request(
            lease, outcome, now, claim, labels, ahead=clocks.ahead, behind=clocks.behind
        )
        return finish.finish(self.group, req)

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
        if done and self._clocks.expired(done[0][0].worker_id):
            return [lease.key for lease, _ in done], []
        return finish.finish_many(
            self.group,
            done,
            now=now,
            claim=claim,
            labels=labels,
            ahead=self._clocks.ahead,
            behind=self._clocks.behind,
        )

    # ------------------------------------------------------------------ cluster

    def dispatch_view(
        self, *, now: float, default: str = dispatch.PULL, limit: int = 1000
    ) -> DispatchView:
        """See Store.dispatch_view."""
        with self.db.tx(write=False) as db:
            return cluster.dispatch_view(db, now=now, default=default, limit=limit)

    def assign(self, assignments: Sequence[tuple[TaskKey, str]], *, now: float) -> list[TaskKey]:
        """See Store.assign."""
        with self.db.tx() as db:
            return cluster.assign(db, assignments, now=now)

    def set_dispatch(self, candidate: str, strategy: str, *, now: float) -> None:
        """See Store.set_dispatch."""
        with self.db.tx() as db:
            cluster.set_dispatch(db, candidate, strategy)

    def drain_worker(self, name: str, *, now: float) -> list[str]:
        """See Store.drain_worker."""
        with self.db.tx() as db:
            return cluster.drain_worker(db, name, now=now)

    def list_locks(self, *, now: float) -> list[LockInfo]:
        """See Store.list_locks."""
        with self.db.tx(write=False) as db:
            return cluster.list_locks(db)

    # ------------------------------------------------------------------ schedules

    def put_schedule(self, entry: CronEntry, *, now: float) -> bool:
        """See Store.put_schedule."""
        with self.db.tx() as db:
            return schedules.put_schedule(db, entry, now=now)

    def get_schedule(self, name: str) -> CronEntry:
        """See Store.get_schedule."""
        with self.db.tx(write=False) as db:
            return schedules.get_schedule(db, name)

    def list_schedules(self) -> list[CronEntry]:
        """See Store.list_schedules."""
        with self.db.tx(write=False) as db:
            return schedules.list_schedules(db)

    def delete_schedule(self, name: str) -> None:
        """See Store.delete_schedule."""
        with self.db.tx() as db:
            schedules.delete_schedule(db, name)

    def suspend_schedule(self, name: str, *, suspended: bool, now: float) -> CronEntry:
        """See Store.suspend_schedule."""
        with self.db.tx() as db:
            return schedules.suspend_schedule(db, name, suspended=suspended, now=now)

    def record_tick(
        self,
        name: str,
        *,
        tick: float,
        run_id: str | None = None,
        missed: int = 0,
        skipped: int = 0,
    ) -> bool:
        """See Store.record_tick."""
        with self.db.tx() as db:
            return schedules.record_tick(
                db, name, tick=tick, run_id=run_id, missed=missed, skipped=skipped
            )

    def campaign(self, candidate: str, *, now: float, ttl: float) -> bool:
        """See Store.campaign: take the lock row when free, expired or ours."""
        with self.db.tx() as db:
            return schedules.campaign(db, candidate, now=now, ttl=ttl)

    def resign(self, candidate: str, *, now: float) -> None:
        """See Store.resign."""
        with self.db.tx() as db:
            schedules.resign(db, candidate)

    def leader(self, *, now: float) -> str | None:
        """See Store.leader."""
        with self.db.tx(write=False) as db:
            return schedules.leader(db, now=now)

    # ------------------------------------------------------------------ hooks

    def claim_hook(
        self,
        deliverer: str,
        *,
        now: float,
        lease_for: float,
        run_id: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> HookDelivery | None:
        """See Store.claim_hook."""
        with self.db.tx(write=False) as db:  # idle deliverers poll: no writer's lock for that
            if not hooks.any_due(db, now=now, run_id=run_id, kinds=kinds):
                return None
        with self.db.tx() as db:
            return hooks.claim(
                db, deliverer, now=now, lease_for=lease_for, run_id=run_id, kinds=kinds
            )

    def finish_hook(
        self,
        delivery: HookDelivery,
        *,
        now: float,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> HookState:
        """See Store.finish_hook."""
        with self.db.tx() as db:
            return hooks.finish(db, delivery, now=now, error=error, retry_at=retry_at)

    # ------------------------------------------------------------------ cache

    def put_cache(self, entry: CacheEntry) -> None:
        """See Store.put_cache."""
        with self.db.tx() as db:
            cache.put_cache(db, entry)

    def get_cache(self, key: str) -> CacheEntry | None:
        """See Store.get_cache."""
        with self.db.tx(write=False) as db:
            return cache.get_cache(db, key)

    def list_cache(self, *, workflow: str | None = None) -> list[CacheEntry]:
        """See Store.list_cache."""
        with self.db.tx(write=False) as db:
            return cache.list_cache(db, workflow=workflow)

    def delete_cache(self, keys: Sequence[str]) -> list[str]:
        """See Store.delete_cache."""
        with self.db.tx() as db:
            return cache.delete_cache(db, keys)

    def gc_cache(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """See Store.gc_cache."""
        with self.db.tx(write=not dry_run) as db:
            return cache.gc_cache(db, older_than=older_than, now=now, dry_run=dry_run)

    # ------------------------------------------------------------------ logs, waiting

    def append_log(self, lease: Lease, text: str) -> None:
        """Append to the attempt's log, keeping the last `log_limit` bytes. LeaseLost if stale."""
        with self.db.tx() as db:
            logs.append_log(db, lease, text, limit=self.log_limit)

    def get_log(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """The stored log of one attempt (the latest by default); "" if none yet."""
        with self.db.tx(write=False) as db:
            return logs.get_log(db, run_id, task_id, attempt)

    def wait(self, timeout: float, *, run_id: str | None = None) -> bool:
        """Block until a change this thread has not seen (a commit through this object, another
        connection or another process; of `run_id` or not) or `timeout`; True when a change was
        seen. Commits in this process wake waiters at once; one waiting thread at a time polls
        `PRAGMA data_version` every few milliseconds for other connections' commits. A thread
        that has seen nothing yet (no transaction, no wait) is answered True at once."""
        return self._waiter.wait(timeout)

    def close(self) -> None:
        """Close the connection. Idempotent; a Ctrl-C in the main thread waits for its end."""
        with interrupts.deferred():
            if self.db.close():
                self._waiter.close()
