"""The Store protocol: durable runs, the priority queue, leases and the worker registry.

Its docstrings are the contract every backend meets and `tests/contract/` checks. The protocol
speaks the domain (submit a run, claim the next ready task, finish an attempt with its fencing
token) rather than key-value or SQL, so each backend uses its own strengths: SQLite
transactions on one host, etcd's ordered ranges, revision-compare transactions, leases and
watches across hosts.

Leases are per worker: `register_worker` opens a lease of `ttl` seconds, `heartbeat` renews
it, and every attempt a worker claims is owned under that lease. When the lease expires (the
worker died or was paused past its TTL), `sweep` records the worker's open attempts as `lost`
and puts their tasks back in the queue. Each claim carries a fencing token (the ownership
record's revision); `append_log` and `finish` are accepted only while the ownership record
still carries that token and the worker's lease is alive, so a stale worker records nothing.

Time is passed in as epoch seconds (`now`), so bookkeeping is testable; but no store compares
two processes' wall clocks to decide liveness: a lease expires when its holder has not renewed
it for its TTL of the observer's own monotonic clock (etcd: the server's lease; SQLite: each
store object's observation of the heartbeat counter, runner.store.liveness). Deadlines and
backoffs are written from the latest live clock and judged by the earliest one, so a worker with
a wrong clock delays them at most, and is reported (`WorkerInfo.clock_skew`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from runner.models import (
    CacheEntry,
    ConcurrencyPolicy,
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
    Schedule,
    TaskKey,
    TaskState,
    WorkerInfo,
)

MAX_LOSSES = 3  # a task whose attempts are lost with their worker this many times fails


class Store(Protocol):
    """Durable runs + ready queue. Each method is atomic: it commits all of its effect or none.

    Backend errors surface as `errors.StoreUnavailable` (cannot reach or open the store) or
    `errors.StoreError` (anything else), with the backend exception as `__cause__`.
    """

    #: Seconds a worker with prefetch may let outcomes pile up for one `finish_many` while its
    #: slots have claimed tasks queued (`worker/_recorder.py`): a call costs about the same for
    #: many finishes as for one (SQLite: one transaction and commit; etcd: one nested request),
    #: so the longer a call takes, the longer the wait that pays.
    finish_batch_wait: float

    #: Whether `finish`/`finish_many` with `claim` take tasks from the head of the queue (so
    #: fewer than asked means a short queue: SQLite), or only successors the finishes made
    #: ready (etcd, `store/etcd/handoff.py`): the worker's prefetch depth reads the queue's
    #: length from the former only (`worker/_depth.py`).
    finish_claims_queue: bool

    #: Whether a run's summary (`get_run(tasks=False)`) counts its finished tasks (etcd: O(run))
    #: rather than reading a stored count (SQLite): a follower of a large run then reads it less
    #: often (`engine.follow`).
    summary_counts_tasks: bool

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
        """Store a run of `plan` with every task, and queue the tasks that have no dependencies.

        Workers can see none of the run until all of it is stored (a large run may be written
        in several chunks, but it becomes visible in one step). The run starts `pending`
        and becomes `running` at its first claim. Raises `errors.RunExists` when `run_id` or
        `key` is already taken (`.run_id` names the existing run); nothing is written then.
        """
        ...

    def get_run(
        self,
        run_id: str,
        *,
        tasks: bool = True,
        now: float | None = None,
        states: Collection[TaskState] | None = None,
    ) -> Run:
        """The run with its tasks (in plan order; only those in `states` when given: what a
        large run's follower reads at its end) and their attempts. A queued task's
        `waiting_reason` says why it waits: "waiting: no live worker matches gpu=true" when no
        live worker (lease alive at `now`, default the wall clock; etcd uses its own lease
        expiry) has labels matching its selector, "waiting: mutex NAME is held" when its lock
        has no room, else "queued". Raises RunNotFound."""
        ...

    def list_runs(self, *, workflow: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs newest first (by created_at, then id), without their tasks."""
        ...

    def cancel_run(self, run_id: str, *, now: float, reason: str = "cancelled") -> Run:
        """Cancel a run: it becomes `cancelled` at once; its pending, ready and retrying tasks
        become `cancelled`; its running attempts are flagged, so their workers see them in
        `Heartbeat.abort`, kill them and finish them with `Reason.CANCELLED`. A finished run is
        returned unchanged. Raises RunNotFound."""
        ...

    def retry_run(self, run_id: str, *, now: float, dry_run: bool = False) -> list[str]:
        """Re-run the failed, cancelled and skipped tasks of a finished run, keeping the
        succeeded ones (Argo's retry): those tasks go back to pending (or straight to the
        queue when their dependencies are all done) with their attempt history kept, and the
        run becomes `running` again. Returns the task ids that will re-run, in plan order;
        with `dry_run` changes nothing. Raises RunNotFound, or UsageError if the run has not
        finished."""
        ...

    def gc(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """Delete every finished run (succeeded, failed or cancelled, with every task
        terminal) whose `finished_at` is more than `older_than` seconds before `now`, with
        everything stored for it: tasks, dependencies, attempts, logs, queue leftovers and its
        idempotency key (which a later `create_run` may take again). Unfinished runs are never
        touched. Each run disappears in one step (it is never visible half-deleted); the store
        may use several transactions, and a gc interrupted midway is completed by the next.
        Idempotent. Returns the ids of the runs deleted (with `dry_run`: that would be), oldest
        first."""
        ...

    # ------------------------------------------------------------------ workers

    def register_worker(self, info: WorkerInfo, *, now: float, ttl: float) -> None:
        """Open the worker's lease (`ttl` seconds) and record its description."""
        ...

    def heartbeat(self, worker_id: str, *, now: float, ttl: float, running: int) -> Heartbeat:
        """Renew the worker's lease for `ttl` seconds from now. Returns the attempts the worker
        holds that it must stop (their run was cancelled or timed out), and `drain=True` once
        `drain_worker` marked it. Raises LeaseLost when
        the lease has already expired: the worker must kill every task it runs and register
        again."""
        ...

    def deregister_worker(self, worker_id: str, *, now: float) -> None:
        """Close the worker's lease (clean shutdown). Attempts it still holds go back to the
        queue at once, as `lost` attempts that do not count against the task's losses."""
        ...

    def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Live workers (lease not expired), by name, with `running` (attempts they own),
        `assigned` (queued tasks assigned to them) and `draining`."""
        ...

    def drain_worker(self, name: str, *, now: float) -> list[str]:
        """Mark every live worker named `name` (or whose id is `name`) draining, in one
        transaction; their ids ([] when none matched). A draining worker's assignments go
        back to the shared queue at once, `assign` skips it, its `claim` returns [] and its
        `heartbeat` answers `drain=True`: it lets its running tasks finish, then deregisters."""
        ...

    # ------------------------------------------------------------------ dispatch

    def set_dispatch(self, candidate: str, strategy: str, *, now: float) -> None:
        """Record `strategy` as the dispatch default of scheduler `candidate`. It is in force
        only while `candidate` holds the leadership (`campaign`): then a task whose effective
        strategy (its run's `spec.dispatch`, else this default) is not `pull` is *reserved*:
        `claim` leaves it in the shared queue for the leader to `assign`. Without a leading
        scheduler nothing is reserved and every task is pulled, so work never stalls."""
        ...

    def dispatch_view(
        self, *, now: float, default: str = "pull", limit: int = 1000
    ) -> DispatchView:
        """One consistent read for the dispatcher: live workers (as `list_workers`) and up to
        `limit` queued tasks, in queue order, that are claimable now (backoff elapsed, run
        open), not assigned, whose effective strategy (`ReadyTask.dispatch`, else `default`)
        is not pull and whose locks have room."""
        ...

    def assign(self, assignments: Sequence[tuple[TaskKey, str]], *, now: float) -> list[TaskKey]:
        """In one transaction, assign each (task key, worker id) whose task is still queued
        and unassigned to that worker, when the worker is live and not draining; returns the
        keys assigned. An assigned task stays queued (state `ready`) but only its worker's
        `claim` takes it, before any task of the shared queue. When the worker's lease
        expires (`sweep`), it deregisters or it drains, its assignments go back to the shared
        queue. On etcd the queue entry moves to `assign/{worker}/...` in the same txn."""
        ...

    # ------------------------------------------------------------------ locks

    def list_locks(self, *, now: float) -> list[LockInfo]:
        """Every mutex (`mutex:NAME`) and semaphore (`semaphore:NAME`) with holders or queued
        waiters, by name. A task's locks are taken in its `claim` transaction (a task whose
        lock has no room is skipped and stays queued, holding no worker slot) and held under
        the claiming worker's lease: released by `finish`, and when the attempt is lost
        (`sweep` after the lease expired, `deregister_worker`)."""
        ...

    # ------------------------------------------------------------------ the queue

    def claim(
        self,
        worker_id: str,
        *,
        now: float,
        limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """Atomically take up to `limit` ready tasks for the worker: first the tasks assigned
        to it (`assign`), then the shared queue; the highest priority first, FIFO by ready
        time within a priority, over the ready tasks of every run. Skips tasks whose retry
        backoff has not elapsed, whose run is at its `parallelism`, whose selector `labels`
        does not match, tasks assigned to another worker, tasks reserved for the leading
        scheduler (`set_dispatch`), and tasks whose mutex or semaphore has no room (the
        claim takes their locks in the same transaction). A draining worker gets []. Each
        claimed task becomes `running` with a new attempt owned under the worker's lease and
        a fencing token no earlier claim of that task had. Returns [] when nothing is
        claimable; raises LeaseLost when the worker's lease has expired. Each Lease carries
        the task spec and a RunContext with the outputs of the tasks its templates
        reference."""
        ...

    def append_log(self, lease: Lease, text: str) -> None:
        """Append to the attempt's stored log, keeping its last `log_limit` bytes.
        Raises LeaseLost when the token is stale; nothing is written then."""
        ...

    def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """Record how an attempt ended, in one transaction that first checks the ownership
        record still carries `lease.token` and the worker's lease is alive (else LeaseLost,
        nothing written). Then: the log tail and outputs are kept; a failure (Reason.EXIT or
        TIMEOUT) with retries left makes the task `retrying` and queues it again after the
        backoff; otherwise the task becomes terminal, every successor whose dependencies are
        now all terminal is queued or skipped by its `when` (skips cascade), failFast cancels
        the run's not-started tasks, and when every task is terminal the run ends
        `succeeded` or `failed`. An attempt of a cancelled run ends its task `cancelled`.

        With `claim` > 0 the worker then takes up to `claim` more tasks as `claim(...,
        labels=labels)` would, with the queue as this finish left it (so a successor it made
        ready can be among them), and they are returned; [] when nothing is claimable or the
        worker is draining. Fewer is always correct: once the finish is recorded, a failed
        claim returns [] rather than raising, and the worker claims in its claim loop. SQLite
        does both in one transaction; etcd claims (in a second transaction, right after) only
        when the finish queued successors, so a chain's next task starts at once while
        independent tasks are claimed in batches by the claim loop."""
        ...

    def finish_many(
        self,
        done: Sequence[tuple[Lease, Outcome]],
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[TaskKey], list[Lease]]:
        """`finish` for several attempts of one worker, in as few transactions as the backend
        can (one on SQLite; on etcd one request while their writes do not overlap). Each
        attempt is fenced on its own: a stale token leaves that attempt unrecorded and is
        returned among the lost keys, the others are recorded. With `claim`, up to `claim`
        tasks are taken afterwards as `finish` would, and returned."""
        ...

    def sweep(self, *, now: float) -> list[TaskKey]:
        """Housekeeping any process may call at any time, idempotent: attempts of workers whose
        lease expired are recorded `lost` and their tasks queued again (the task fails on its
        MAX_LOSSES-th loss); runs past their `timeout` fail (reason "timeout") and their
        unfinished tasks are cancelled. Returns the task keys it changed."""
        ...

    # ------------------------------------------------------------------ cache (cached tasks)

    def put_cache(self, entry: CacheEntry) -> None:
        """Record a cached task's success under `entry.key` in one transaction, replacing an
        entry with the same key. Entries outlive the runs that wrote them (docs/WORKFLOW.md
        "Cached tasks"); the worker writes one before recording the attempt's success."""
        ...

    def get_cache(self, key: str) -> CacheEntry | None:
        """The entry recorded under `key`, or None. Whether it is fresh enough (`maxAge`) is
        the caller's decision (runner.cache.fresh)."""
        ...

    def list_cache(self, *, workflow: str | None = None) -> list[CacheEntry]:
        """Every entry (of `workflow` only, when given), oldest first, then by key."""
        ...

    def delete_cache(self, keys: Sequence[str]) -> list[str]:
        """Delete the entries with these keys in one transaction; returns the keys that
        existed. A later attempt of their tasks runs again."""
        ...

    def gc_cache(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """Delete the entries recorded before `now - older_than` (none with `dry_run`); returns
        their keys, oldest first. Each entry goes in one transaction (several per transaction,
        in batches); `runner gc` calls it with `gc`."""
        ...

    # ------------------------------------------------------------------ schedules (cron)

    def put_schedule(self, entry: CronEntry, *, now: float) -> bool:
        """Register or update the schedule `entry.name` in one transaction; True when something
        changed. A new schedule starts with `last_tick = now` (ticks before its registration
        never fire) and `suspended = entry.schedule.suspend`. An existing one with the same
        `plan_hash` is left untouched (False); a changed one takes the new plan, schedule and
        source from the next tick on, keeping its tick bookkeeping (`merge_schedule`)."""
        ...

    def get_schedule(self, name: str) -> CronEntry:
        """The schedule and its tick bookkeeping. Raises ScheduleNotFound."""
        ...

    def list_schedules(self) -> list[CronEntry]:
        """Every schedule, by name."""
        ...

    def delete_schedule(self, name: str) -> None:
        """Remove the schedule (its runs stay). Raises ScheduleNotFound."""
        ...

    def suspend_schedule(self, name: str, *, suspended: bool, now: float) -> CronEntry:
        """Suspend or resume. Resuming moves `last_tick` up to `now`: ticks that fell in the
        suspension never fire and are not counted as missed. Raises ScheduleNotFound."""
        ...

    def record_tick(
        self,
        name: str,
        *,
        tick: float,
        run_id: str | None = None,
        missed: int = 0,
        skipped: int = 0,
    ) -> bool:
        """Advance the schedule's bookkeeping to `tick` in one compare-and-set: only when `tick`
        is later than `last_tick` (a paused scheduler waking up never moves it back). Sets
        `last_run_id` when `run_id` is given and adds `missed` / `skipped`. True when applied;
        False for a stale tick or a deleted schedule. With `missed`, the same transaction
        records the `missed_tick` hook deliveries of the schedule's latest run (`run_id`, else
        `last_run_id`; see `claim_hook`), due at `tick`."""
        ...

    def campaign(self, candidate: str, *, now: float, ttl: float) -> bool:
        """Take or keep the scheduler leadership for `ttl` seconds; True while `candidate`
        leads. At most one candidate leads at a time: on etcd the leader key is created if
        absent on the candidate's lease (an election), on SQLite a lock row is taken when free
        or expired (`now` against its expiry). A leader that misses its renewals past `ttl`
        loses the leadership and must stop firing."""
        ...

    def resign(self, candidate: str, *, now: float) -> None:
        """Give up the leadership if `candidate` holds it, so a standby takes over at once."""
        ...

    def leader(self, *, now: float) -> str | None:
        """The current leader's candidate id, or None."""
        ...

    # ------------------------------------------------------------------ hooks (docs/HOOKS.md)

    def claim_hook(
        self,
        deliverer: str,
        *,
        now: float,
        lease_for: float,
        run_id: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> HookDelivery | None:
        """Take one recorded hook delivery to send: the oldest whose `due_at` has come and
        that no deliverer holds under a live lease (a deliverer that died holding one loses
        it when its lease lapses at `now`). In one transaction it becomes `delivering`, its
        `attempts` grow by one, and it gets a token no earlier claim of it had and a lease
        until `now + lease_for`. With `run_id`, only that run's deliveries; with `kinds`, only
        hooks of those kinds (`webhook`, `command`). None when nothing is due.

        Deliveries are recorded by the transaction that ends a run (`finish`, `cancel_run`,
        `sweep`'s timeout, including runs that end before any task started): one per hook of
        the run's plan whose `on` (and `when`) matches how the run ended, exactly once per run
        end. A run ended again after `retry_run` records them again, with `end` one higher.
        `get_run` shows them as `Run.hooks`."""
        ...

    def finish_hook(
        self,
        delivery: HookDelivery,
        *,
        now: float,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> HookState:
        """Record how a claimed try went, in one transaction that first checks the delivery
        still carries `delivery.token` (else LeaseLost, nothing written): no `error` →
        `delivered`; an error with `retry_at` → `due` again from `retry_at` (the deliverer's
        backoff), keeping `last_error`; an error without → `failed` (given up). Returns the new
        state. Never changes the run."""
        ...

    # ------------------------------------------------------------------ logs, waiting

    def get_log(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """The stored log of one attempt (the latest when `attempt` is None); "" if none yet.
        Raises RunNotFound / TaskNotFound."""
        ...

    def wait(self, timeout: float, *, run_id: str | None = None) -> bool:
        """Block until the store may have changed (a commit by this or any other process) or
        `timeout` seconds pass, without busy polling. True when a change was seen.

        Every change a waiter acts on wakes it: new queue entries, claims and finishes (of any
        run), runs, workers, cluster and cron keys. A store may leave out changes that only
        touch task records, logs and bookkeeping (etcd does: every watching process would
        receive each task's record twice); a follower of one run passes `run_id` to be woken
        by that run's task records and logs as well."""
        ...

    def close(self) -> None:
        """Release connections and background threads. Idempotent."""
        ...


def merge_schedule(old: CronEntry | None, new: CronEntry, *, now: float) -> CronEntry | None:
    """What `put_schedule` stores for `new` over `old`, or None when nothing changed.

    Both backends call this inside their transaction, so they agree on the rules: a new
    schedule starts at `now`; an unchanged plan hash changes nothing; a changed plan keeps the
    tick bookkeeping, and keeps a `suspended` set by the CLI unless the file's own `suspend`
    changed.
    """
    if old is None:
        return dataclasses.replace(
            new,
            suspended=new.schedule.suspend,
            created_at=now,
            updated_at=now,
            last_tick=now,
            last_run_id=None,
            missed=0,
            skipped=0,
        )
    if old.plan_hash == new.plan_hash and old.source == new.source:
        return None
    suspended = old.suspended
    if old.schedule.suspend != new.schedule.suspend:
        suspended = new.schedule.suspend
    return dataclasses.replace(
        old,
        plan=new.plan,
        plan_hash=new.plan_hash,
        schedule=new.schedule,
        source=new.source,
        suspended=suspended,
        updated_at=now,
    )


def entry_to_dict(entry: CronEntry) -> dict[str, object]:
    """The schedule as JSON-ready data (both backends store this form)."""
    data = dataclasses.asdict(entry)
    data["schedule"]["concurrency_policy"] = entry.schedule.concurrency_policy.value
    return data


def entry_from_dict(data: dict[str, Any]) -> CronEntry:
    """The CronEntry that `entry_to_dict` wrote."""
    s = dict(data["schedule"])
    s["concurrency_policy"] = ConcurrencyPolicy(s["concurrency_policy"])
    return CronEntry(**{**data, "schedule": Schedule(**s)})
