"""EtcdStore: the Store protocol on etcd v3 (ordered keys, revision-compare transactions,
leases, watches). Each method delegates to the module of its Protocol section; the key layout
is in `keys`, the record shapes in `records` (see docs/ARCHITECTURE.md, "etcd data model")."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from runner import dispatch, errors
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
    RunState,
    TaskKey,
    TaskState,
    WorkerInfo,
)
from runner.store.etcd import (
    cache,
    claim,
    cluster,
    finish,
    gc,
    hooks,
    logs,
    runs,
    schedules,
    workers,
)
from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys
from runner.store.etcd.watch import Watcher

DEFAULT_PREFIX = "/runner/"


class EtcdStore:
    """Durable runs and the ready queue in etcd. Thread-safe; one gRPC channel."""

    # A batch of finishes is one request of nested transactions (see `finish`): worth waiting
    # for, up to half a prefetch window (worker/_depth.py); finishes hand over successors only.
    finish_batch_wait = 0.05
    finish_claims_queue = False
    summary_counts_tasks = True

    def __init__(
        self,
        conn: c.Connection,
        *,
        prefix: str = DEFAULT_PREFIX,
        log_limit: int = 1024 * 1024,
        failpoints: Failpoints | None = None,
        compact: bool = True,
    ) -> None:
        self.client = c.Client(conn)
        self.keys = Keys(prefix if prefix.endswith("/") else prefix + "/")
        self.log_limit = log_limit
        watcher = Watcher(self.client, self.keys.prefix)
        fp = failpoints or Failpoints()
        self.ctx = Ctx(self.client, self.keys, watcher, fp, log_limit)
        self.ctx.compaction.enabled = compact  # periodic compaction while claiming
        self.client.track(self.keys.queue())
        self.client.keep_floor(self.keys.queue(), self.keys.floor())  # see `head`
        self._waited = 0
        self._runs = runs.RunCache()
        self._swept = workers.Swept()
        self._election = schedules.Election()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        log_limit: int = 1024 * 1024,
        failpoints: Failpoints | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> EtcdStore:
        """etcd://host:port[,host:port...][/prefix][?ca=FILE&cert=FILE&key=FILE&compact=off]
        (`compact=off`: never compact etcd's history while claiming, see `compaction`)."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoints = tuple(_endpoint(url, hp) for hp in parts.netloc.split(",") if hp)
        if not endpoints:
            raise errors.ConfigError(f"store URL {url!r}: expected etcd://HOST:PORT[,HOST:PORT]")
        conn = c.Connection(
            endpoints=endpoints,
            ca=query.get("ca"),
            cert=query.get("cert"),
            key=query.get("key"),
            user=user,
            password=password,
            tls=parts.scheme == "etcds",
        )
        prefix = parts.path if parts.path not in ("", "/") else DEFAULT_PREFIX
        compact = query.get("compact", "on")
        if compact not in ("on", "off"):
            raise errors.ConfigError(f"store URL {url!r}: compact={compact!r}; use on or off")
        return cls(
            conn,
            prefix=prefix,
            log_limit=log_limit,
            failpoints=failpoints,
            compact=compact == "on",
        )

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
        """See Store.create_run: tasks in chunks, then the run record (visibility) last."""
        if self.ctx.clocks.stale():  # a one-shot process (`runner apply`) has not read them
            workers.read_clocks(self.ctx, now=now)
        new = runs.NewRun(plan=plan, run_id=run_id, now=now, key=key, scheduled_time=scheduled_time)
        run = runs.create_run(self.ctx, new)
        self.ctx.failpoints.hit("create_run.after_commit")
        return run

    def get_run(
        self,
        run_id: str,
        *,
        tasks: bool = True,
        now: float | None = None,
        states: Collection[TaskState] | None = None,
    ) -> Run:
        """The run with its tasks in plan order (live workers: those with a lease, whatever
        `now`). Raises RunNotFound."""
        run = runs.get_run(self.ctx, self._runs, run_id, tasks=tasks)
        if states is None:
            return run
        # the records are read (and cached) whole: etcd has no index by state
        return dataclasses.replace(run, tasks=tuple(t for t in run.tasks if t.state in states))

    def list_runs(self, *, workflow: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs newest first (created_at, then id), without tasks."""
        return runs.list_runs(self.ctx, workflow=workflow, limit=limit)

    def cancel_run(self, run_id: str, *, now: float, reason: str = "cancelled") -> Run:
        """See Store.cancel_run: flip the run, then cancel unstarted tasks in chunks."""
        self.ctx.failpoints.hit("cancel_run.before")
        runs.end_run(self.ctx, run_id, RunState.CANCELLED, reason, now=now)
        return self.get_run(run_id)

    def retry_run(self, run_id: str, *, now: float, dry_run: bool = False) -> list[str]:
        """See Store.retry_run."""
        return runs.retry_run(self.client, self.keys, run_id, now=now, dry_run=dry_run)

    def gc(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """See Store.gc (unlink each run in one txn, then delete the rest in chunks)."""
        return gc.gc(self.client, self.keys, older_than=older_than, now=now, dry_run=dry_run)

    # ------------------------------------------------------------------ workers

    def register_worker(self, info: WorkerInfo, *, now: float, ttl: float) -> None:
        """Grant the worker's etcd lease and put its record on it."""
        workers.register_worker(self.ctx, info, now=now, ttl=ttl)

    def heartbeat(self, worker_id: str, *, now: float, ttl: float, running: int) -> Heartbeat:
        """Refresh the worker's lease (LeaseLost once expired); abort attempts of ended runs."""
        return workers.heartbeat(self.ctx, worker_id, now=now, running=running)

    def deregister_worker(self, worker_id: str, *, now: float) -> None:
        """Return the worker's attempts to the queue (losses not counted), revoke its lease."""
        workers.deregister_worker(self.ctx, worker_id, now=now)

    def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Live workers (their lease exists), by name."""
        return workers.list_workers(self.ctx)

    def sweep(self, *, now: float) -> list[TaskKey]:
        """See Store.sweep and `workers.sweep`."""
        # run deadlines are judged by the earliest live clock
        return workers.sweep(self.ctx, self._swept, now=now + self.ctx.clocks.behind)

    # ------------------------------------------------------------------ cluster

    def dispatch_view(
        self, *, now: float, default: str = dispatch.PULL, limit: int = 1000
    ) -> DispatchView:
        """See Store.dispatch_view."""
        cl = self.ctx.cluster
        return cluster.view(self.client, self.keys, cl, now=now, default=default, limit=limit)

    def assign(self, assignments: Sequence[tuple[TaskKey, str]], *, now: float) -> list[TaskKey]:
        """See Store.assign: entries move from `queue/` to `assign/{worker}/` in one txn."""
        done, rev = cluster.assign(self.client, self.keys, assignments)
        cluster.touched(self.ctx, rev)
        return done

    def set_dispatch(self, candidate: str, strategy: str, *, now: float) -> None:
        """See Store.set_dispatch: `cluster/dispatch` on the candidate's election lease."""
        lease = self._election.lease_of(candidate)
        cluster.set_dispatch(self.ctx, candidate, strategy, lease=lease)

    def drain_worker(self, name: str, *, now: float) -> list[str]:
        """See Store.drain_worker."""
        ids, rev = cluster.drain(self.client, self.keys, name)
        cluster.touched(self.ctx, rev)
        return ids

    def list_locks(self, *, now: float) -> list[LockInfo]:
        """See Store.list_locks."""
        return cluster.list_locks(self.client, self.keys)

    # ------------------------------------------------------------------ the queue

    def claim(
        self,
        worker_id: str,
        *,
        now: float,
        limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """See Store.claim and `claim.claim`."""
        due = now + self.ctx.clocks.behind  # backoffs end by the earliest live clock
        return claim.claim(self.ctx, worker_id, now=due, limit=limit, labels=labels)

    def append_log(self, lease: Lease, text: str) -> None:
        """See Store.append_log."""
        logs.append_log(self.ctx, lease, text)

    def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """See Store.finish and `finish.finish`."""
        return finish.finish(self.ctx, lease, outcome, now=now, claim=claim, labels=labels)

    def finish_many(
        self,
        done: Sequence[tuple[Lease, Outcome]],
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[TaskKey], list[Lease]]:
        """See Store.finish_many and `finish.finish_many`."""
        return finish.finish_many(self.ctx, done, now=now, claim=claim, labels=labels)

    # ------------------------------------------------------------------ cache

    def put_cache(self, entry: CacheEntry) -> None:
        """See Store.put_cache."""
        cache.put_cache(self.client, self.keys, entry)

    def get_cache(self, key: str) -> CacheEntry | None:
        """See Store.get_cache."""
        return cache.get_cache(self.client, self.keys, key)

    def list_cache(self, *, workflow: str | None = None) -> list[CacheEntry]:
        """See Store.list_cache."""
        return cache.list_cache(self.client, self.keys, workflow=workflow)

    def delete_cache(self, keys: Sequence[str]) -> list[str]:
        """See Store.delete_cache."""
        return cache.delete_cache(self.client, self.keys, keys)

    def gc_cache(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """See Store.gc_cache."""
        return cache.gc_cache(
            self.client, self.keys, older_than=older_than, now=now, dry_run=dry_run
        )

    # ------------------------------------------------------------------ schedules

    def put_schedule(self, entry: CronEntry, *, now: float) -> bool:
        """See Store.put_schedule."""
        return schedules.put_schedule(self.client, self.keys, entry, now=now)

    def get_schedule(self, name: str) -> CronEntry:
        """See Store.get_schedule."""
        return schedules.get_schedule(self.client, self.keys, name)

    def list_schedules(self) -> list[CronEntry]:
        """See Store.list_schedules."""
        return schedules.list_schedules(self.client, self.keys)

    def delete_schedule(self, name: str) -> None:
        """See Store.delete_schedule."""
        schedules.delete_schedule(self.client, self.keys, name)

    def suspend_schedule(self, name: str, *, suspended: bool, now: float) -> CronEntry:
        """See Store.suspend_schedule."""
        return schedules.suspend_schedule(
            self.client, self.keys, name, suspended=suspended, now=now
        )

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
        t = schedules.Tick(tick=tick, run_id=run_id, missed=missed, skipped=skipped)
        return schedules.record_tick(self.client, self.keys, name, t)

    def campaign(self, candidate: str, *, now: float, ttl: float) -> bool:
        """See Store.campaign: create the leader key if absent on the candidate's lease."""
        return schedules.campaign(self.client, self.keys, self._election, candidate, ttl=ttl)

    def resign(self, candidate: str, *, now: float) -> None:
        """See Store.resign (the dispatch default goes with the leadership)."""
        schedules.resign(self.client, self._election, candidate)
        cluster.touched(self.ctx, self.client.revision)

    def leader(self, *, now: float) -> str | None:
        """See Store.leader."""
        return schedules.leader(self.client, self.keys)

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
        return hooks.claim(
            self.ctx, deliverer, now=now, lease_for=lease_for, run_id=run_id, kinds=kinds
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
        return hooks.finish(self.ctx, delivery, now=now, error=error, retry_at=retry_at)

    # ------------------------------------------------------------------ logs, waiting

    def get_log(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """See Store.get_log."""
        return logs.get_log(self.ctx, run_id, task_id, attempt=attempt)

    def wait(self, timeout: float, *, run_id: str | None = None) -> bool:
        """Block on the prefix watches until a change arrives that no earlier wait returned
        for, or `timeout` (see `watch` for the changes watched)."""
        # Every change since the last wait counts, this object's own included: a worker whose
        # slot thread finished a task while its main thread was busy must not sleep through it.
        watcher = self.ctx.watcher
        watcher.start(self.client.revision)
        if run_id is not None:
            watcher.follow(run_id, self.client.revision)
        changed = watcher.wait(self._waited, max(0.0, timeout))
        self._waited = watcher.events
        return changed

    def close(self) -> None:
        """Stop the watch thread and close the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.ctx.watcher.close()
        self.ctx.close()
        self.client.close()


def _endpoint(url: str, hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host:
        return hostport, 2379
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise errors.ConfigError(f"store URL {url!r}: bad port in {hostport!r}") from None
