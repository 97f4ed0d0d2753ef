"""EtcdStore: the Store protocol on etcd v3 (ordered keys, revision-compare transactions,
leases, watches). The key layout is in `etcd_keys` and docs/ARCHITECTURE.md."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runner import errors
from runner.failpoints import Failpoints
from runner.models import (
    Heartbeat,
    Lease,
    Outcome,
    Plan,
    Run,
    RunState,
    TaskKey,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from runner.store import (
    etcd_claim,
    etcd_cluster,
    etcd_dispatch,
    etcd_finish,
    etcd_gc,
    etcd_logs,
    etcd_submit,
    etcd_work,
)
from runner.store import etcd_client as c
from runner.store import etcd_flow as flow
from runner.store import etcd_handoff as handoff
from runner.store.etcd_cron import EtcdCronMixin
from runner.store.etcd_keys import Keys, dumps, loads, run_from_dict, task_record, waiting_reason
from runner.store.etcd_watch import Watcher

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "/runner/"
RUNS_CACHED = 8  # runs whose task records get_run keeps, to read only what changed
FULL_SWEEP_EVERY = 5.0  # seconds: a sweep runs in full at least this often


class EtcdStore(etcd_dispatch.EtcdClusterMixin, EtcdCronMixin):
    """Durable runs and the ready queue in etcd. Thread-safe; one gRPC channel."""

    # A request per non-overlapping group of finishes anyway: waiting made W3 slower (1.06-1.24
    # s against 0.92-1.11 s without, alternating, 4 processes, prefetch 128).
    finish_batch_wait = 0.0

    def __init__(
        self, conn: c.Connection, *, prefix: str = DEFAULT_PREFIX, log_limit: int = 1024 * 1024,
        failpoints: Failpoints | None = None,
    ) -> None:  # fmt: skip
        self.client = c.Client(conn)
        self.keys = Keys(prefix if prefix.endswith("/") else prefix + "/")
        self.log_limit = log_limit
        self.ctx = etcd_work.Ctx(self.client, self.keys, failpoints or Failpoints(), log_limit)
        self._watcher = Watcher(self.client, self.keys.prefix)
        self.client.track(self.keys.queue())
        self._waited = 0
        self._leases: dict[str, int] = {}
        self._tasks: dict[str, tuple[int, dict[str, tuple[int, TaskRecord]]]] = {}
        self._swept = (0, 0.0, 0.0)  # watch revision, time and next run deadline of a sweep
        self._needs: dict[str, dict[str, etcd_dispatch.Needs]] = {}  # run -> waiting reasons
        self._wide: dict[str, dict[str, int]] = {}  # run -> its wide tasks' dependency counts
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, log_limit: int = 1024 * 1024, failpoints: Failpoints | None = None,
        user: str | None = None, password: str | None = None,
    ) -> EtcdStore:  # fmt: skip
        """etcd://host:port[,host:port...][/prefix][?ca=FILE&cert=FILE&key=FILE]."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoints = tuple(_endpoint(url, hp) for hp in parts.netloc.split(",") if hp)
        if not endpoints:
            raise errors.ConfigError(f"store URL {url!r}: expected etcd://HOST:PORT[,HOST:PORT]")
        conn = c.Connection(
            endpoints=endpoints, ca=query.get("ca"), cert=query.get("cert"),
            key=query.get("key"), user=user, password=password, tls=parts.scheme == "etcds",
        )  # fmt: skip
        prefix = parts.path if parts.path not in ("", "/") else DEFAULT_PREFIX
        return cls(conn, prefix=prefix, log_limit=log_limit, failpoints=failpoints)

    # ------------------------------------------------------------------ runs

    def create_run(
        self, plan: Plan, *, run_id: str, now: float, key: str | None = None,
        scheduled_time: float | None = None,
    ) -> Run:  # fmt: skip
        """See Store.create_run: tasks in chunks, then the run record (visibility) last."""
        return etcd_submit.create_run(
            self.client, self.keys, plan, run_id=run_id, now=now, key=key,
            scheduled_time=scheduled_time, senders=self.ctx.senders(),
        )  # fmt: skip

    def get_run(self, run_id: str, *, tasks: bool = True, now: float | None = None) -> Run:
        """The run with its tasks in plan order (live workers: those with a lease, whatever
        `now`). Raises RunNotFound."""
        with self._lock:
            rev, known = self._tasks.get(run_id, (0, {}))
        ops = [c.get(self.keys.run(run_id)), c.count(self.keys.done(run_id, ""))]
        if tasks and rev:  # the records changed since the last read, in the same round trip
            ops.append(c.changed_since(self.keys.task(run_id, ""), rev + 1, c.PAGE))
        responses, at = self.client.reads(ops, "get run")
        items = c.items_of(responses[:1])
        if not items:
            raise errors.RunNotFound(run_id)
        run = run_from_dict(loads(items[0].value), done=int(responses[1].response_range.count))
        if not tasks:
            return run
        if rev and not responses[2].response_range.more:
            changed = c.items_of(responses[2:])
        else:  # the first read of the run, or many changes: page through them
            changed, at = self.client.scan_at(
                self.keys.task(run_id, ""), min_mod=rev + 1 if rev else 0
            )
        records = self._task_records(run_id, known, changed, at)
        needs = self._needs.get(run_id, {})
        records = etcd_dispatch.with_reasons(self.client, self.keys, records, needs)
        return _with_tasks(run, self._count_arrivals(run_id, records))

    def _count_arrivals(
        self, run_id: str, records: tuple[TaskRecord, ...]
    ) -> tuple[TaskRecord, ...]:
        """Pending wide tasks with how many dependencies they still wait for (their records
        do not change as dependencies arrive: the `arr/` markers are counted)."""
        wide = self._wide.get(run_id, {})
        pending = [r.id for r in records if r.id in wide and r.state is TaskState.PENDING]
        if not pending:
            return records
        arrived = self.client.counts([self.keys.arrived(run_id, t) for t in pending])
        left = {t: wide[t] - n for t, n in zip(pending, arrived, strict=True)}
        return tuple(
            dataclasses.replace(
                r, waiting_reason=waiting_reason({"state": "pending", "wide": left[r.id]})
            )
            if r.id in left
            else r
            for r in records
        )

    def _task_records(
        self, run_id: str, known: dict[str, tuple[int, TaskRecord]], changed: list[c.Item], at: int
    ) -> tuple[TaskRecord, ...]:
        """The run's task records in plan order: `known` (read at an earlier revision) updated
        with the records `changed` since, as of revision `at`. Followers call get_run on every
        change, so only the records modified since this object's last read are fetched."""
        known = dict(known)
        for item in changed:
            d = loads(item.value)
            known[item.key] = (int(d["order"]), task_record(d, item.mod))
            if (need := etcd_dispatch.needs_of(d["spec"])) is not None:
                self._needs.setdefault(run_id, {})[d["spec"]["id"]] = need
            if d.get("wide"):
                self._wide.setdefault(run_id, {})[d["spec"]["id"]] = int(d["wide"])
        with self._lock:
            if at >= self._tasks.get(run_id, (0, {}))[0]:
                self._tasks.pop(run_id, None)
                self._tasks[run_id] = (at, known)
            while len(self._tasks) > RUNS_CACHED:
                oldest = next(iter(self._tasks))
                self._tasks.pop(oldest)
                self._needs.pop(oldest, None)
                self._wide.pop(oldest, None)
        return tuple(r for _, r in sorted(known.values(), key=lambda x: x[0]))

    def list_runs(self, *, workflow: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs newest first (created_at, then id), without tasks."""
        runs = [loads(i.value) for i in self.client.scan(self.keys.runs())]
        runs = [r for r in runs if workflow is None or r["workflow"] == workflow]
        runs.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        runs = runs[:limit] if limit is not None else runs
        done = self.client.counts([self.keys.done(r["id"], "") for r in runs])
        return [run_from_dict(r, done=n) for r, n in zip(runs, done, strict=True)]

    def cancel_run(self, run_id: str, *, now: float, reason: str = "cancelled") -> Run:
        """See Store.cancel_run: flip the run, then cancel unstarted tasks in chunks."""
        self._end_run(run_id, RunState.CANCELLED, reason, now=now)
        return self.get_run(run_id)

    def _end_run(self, run_id: str, state: RunState, reason: str, *, now: float) -> list[str]:
        """Flip an unfinished run to `state`, then cancel its unstarted tasks (their ids)."""
        for _ in range(100):
            item = self.client.get(self.keys.run(run_id))
            if item is None:
                raise errors.RunNotFound(run_id)
            run = loads(item.value)
            if RunState(run["state"]).terminal:
                return []
            run.update(state=state.value, reason=reason, finished_at=now, halted=True)
            ops = [c.put(item.key, dumps(run)), c.delete(self.keys.active(run_id)),
                   c.put(self.keys.ending(run_id), state.value)]  # fmt: skip
            if self.client.txn([c.mod_is(item.key, item.mod)], ops, "end run").succeeded:
                return flow.cancel_unstarted(self.client, self.keys, run_id)
        raise errors.StoreError(f"cancel {run_id}: too much contention")

    def retry_run(self, run_id: str, *, now: float, dry_run: bool = False) -> list[str]:
        """See Store.retry_run."""
        return etcd_submit.retry_run(self.client, self.keys, run_id, now=now, dry_run=dry_run)

    def gc(self, *, older_than: float, now: float, dry_run: bool = False) -> list[str]:
        """See Store.gc (etcd_gc: unlink each run in one txn, then delete the rest in chunks)."""
        return etcd_gc.gc(self.client, self.keys, older_than=older_than, now=now, dry_run=dry_run)

    # ------------------------------------------------------------------ workers

    def register_worker(self, info: WorkerInfo, *, now: float, ttl: float) -> None:
        """Grant the worker's etcd lease and put its record on it."""
        lease = self.client.grant(ttl)
        with self._lock:
            self._leases[info.id] = lease
        self._put_worker(info.id, _worker_dict(info, now, ttl, lease, info.running), lease)

    def _put_worker(self, worker_id: str, value: dict[str, Any], lease: int) -> None:
        try:
            self.client.txn([], [c.put(self.keys.worker(worker_id), dumps(value), lease)], "worker")
        except c.LeaseMissing:
            raise etcd_work._worker_lost(worker_id) from None

    def _lease_of(self, worker_id: str) -> tuple[int, dict[str, Any]]:
        item = self.client.get(self.keys.worker(worker_id))
        if item is None:
            raise etcd_work._worker_lost(worker_id)
        value = loads(item.value)
        return int(value["lease"]), value

    def heartbeat(self, worker_id: str, *, now: float, ttl: float, running: int) -> Heartbeat:
        """Refresh the worker's lease (LeaseLost once expired); abort attempts of ended runs."""
        lease, value = self._lease_of(worker_id)
        if self.client.keepalive(lease) <= 0:
            raise etcd_work._worker_lost(worker_id)
        value.update(running=running, heartbeat_at=now, expires_at=now + float(value["ttl"]))
        self._put_worker(worker_id, value, lease)
        held = [self.keys.split(i.key, "held")[1:3] for i in self.client.scan(
            self.keys.held(worker_id), keys_only=True)]  # fmt: skip
        runs, _ = self.client.read_many(self.keys.run(r) for r, _ in held)
        ended = {k for k, v in runs.items() if RunState(loads(v.value)["state"]).terminal}
        abort = frozenset((r, t) for r, t in held if self.keys.run(r) in ended)
        return Heartbeat(abort=abort, drain=bool(value.get("draining")))

    def deregister_worker(self, worker_id: str, *, now: float) -> None:
        """Return the worker's attempts to the queue (losses not counted), revoke its lease."""
        with self._lock:
            self._leases.pop(worker_id, None)
        item = self.client.get(self.keys.worker(worker_id))
        for held in self.client.scan(self.keys.held(worker_id)):
            key = etcd_work.lose(self.ctx, worker_id, held, now=now, counted=False)
            if key is not None:
                self._after(key[0], now=now)
        self._touched(etcd_cluster.unassign(self.client, self.keys, worker_id))
        if item is not None:
            self.client.revoke(int(loads(item.value)["lease"]))

    def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Live workers (their lease exists), by name."""
        out = [_worker_info(loads(i.value)) for i in self.client.scan(self.keys.worker())]
        return sorted(out, key=lambda w: (w.name, w.id))

    # ------------------------------------------------------------------ the queue

    def claim(
        self, worker_id: str, *, now: float, limit: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:  # fmt: skip
        """See Store.claim: the worker's assignments first (read again only when the watch
        saw a change to cluster keys), then the shared queue."""
        view = self._worker_view(worker_id)
        if view.draining:
            return []
        lease = self._leases.get(worker_id)
        if lease is None:  # registered through another store object
            lease, _ = self._lease_of(worker_id)
        leases: list[Lease] = []
        if view.assigned:
            self.ctx.cluster.views.pop(worker_id, None)  # read them again next time
            leases = etcd_dispatch.claim_assigned(
                self.ctx, worker_id, lease, view.assigned, now=now, limit=limit
            )
        if len(leases) >= limit or self._queue_unchanged():
            return leases
        more = etcd_claim.claim(
            self.ctx, worker_id, lease, now=now, limit=limit - len(leases), labels=labels
        )
        return leases + more

    def resign(self, candidate: str, *, now: float) -> None:
        """See Store.resign (the dispatch default goes with the leadership)."""
        super().resign(candidate, now=now)
        self._touched(self.client.revision)

    def _queue_unchanged(self) -> bool:
        """This object read an empty queue while its watch ran, and since then neither the
        watch saw a new queue entry nor did this object write one: a claim would find nothing
        (a worker's wait wakes on every finish, so most of its claims would be such empty
        reads). Another's new entry whose event is still on its way wakes the wait after."""
        empty_at = self.ctx.empty_at
        return bool(
            empty_at
            and not self.ctx.ahead
            and 0 < self._watcher.origin <= empty_at
            and max(self._watcher.queue_rev, self.client.tracked_rev) <= empty_at
        )

    def append_log(self, lease: Lease, text: str) -> None:
        """See Store.append_log."""
        etcd_work.append_log(self.ctx, lease, text)

    def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[Lease]:
        """See Store.finish. With `claim`, the finish transaction itself hands the finishing
        worker a successor it made ready when nothing is ahead of it in the queue (see
        `etcd_handoff`); when it queued successors without handing one over, a claim
        transaction follows right after it, without waiting for the watch to report them. A
        finish that queued nothing claims nothing: the worker's claim loop claims for several
        slots in one transaction, where one claim per slot thread would race its siblings for
        the same head entries."""
        taker = self._taker(lease.worker_id, labels) if claim > 0 else None
        queued, leases = etcd_finish.finish(self.ctx, lease, outcome, now=now, taker=taker)
        if leases or claim <= 0 or not queued:
            return leases
        try:
            return self.claim(lease.worker_id, now=now, limit=claim, labels=labels)
        except errors.StoreError as exc:  # LeaseLost too: the claim loop will find out
            logger.debug("claim after finish failed: %s", exc)
            return []

    def finish_many(
        self,
        done: Sequence[tuple[Lease, Outcome]],
        *,
        now: float,
        claim: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[TaskKey], list[Lease]]:
        """See Store.finish_many: their transactions nested in one request (see
        `etcd_finish.finish_many`), then a claim as `finish` makes one."""
        taker = self._taker(done[0][0].worker_id, labels) if claim > 0 and done else None
        lost, queued, leases = etcd_finish.finish_many(self.ctx, done, now=now, taker=taker)
        if leases or claim <= 0 or not queued:
            return lost, leases
        try:
            return lost, self.claim(done[0][0].worker_id, now=now, limit=claim, labels=labels)
        except errors.StoreError as exc:  # LeaseLost too: the claim loop will find out
            logger.debug("claim after finish failed: %s", exc)
            return lost, []

    def _taker(self, worker_id: str, labels: Mapping[str, str] | None) -> handoff.Taker | None:
        """Who a finish may hand a successor to: the worker, unless it is draining or has
        tasks assigned by the scheduler (those come first)."""
        try:
            view = self._worker_view(worker_id)
            lease = self._leases.get(worker_id) or self._lease_of(worker_id)[0]
        except errors.StoreError:
            return None  # LeaseLost too: the finish itself will say so
        if view.draining or view.assigned:
            return None
        return handoff.Taker(worker_id, lease, labels)

    def sweep(self, *, now: float) -> list[TaskKey]:
        """Lose attempts of expired leases, time out runs, drain leftover markers. Skipped
        when the watch saw no commit since the last sweep (an expired lease deletes keys, so
        it is a commit), no run deadline has come, and the last full sweep is recent."""
        rev = self._watcher.start(self.client.revision)
        last_rev, last_at, next_deadline = self._swept
        if rev == last_rev and now < next_deadline and now - last_at < FULL_SWEEP_EVERY:
            return []
        changed, deadline = self._sweep(now=now)
        self._swept = (rev, now, deadline)
        return changed

    def _sweep(self, *, now: float) -> tuple[list[TaskKey], float]:
        # both at one revision: a task claimed between two reads would look lost
        owns, rev = self.client.scan_at(self.keys.owns(), keys_only=True)
        owned = {i.key for i in owns}
        changed: list[TaskKey] = []
        for held in self.client.scan_at(self.keys.helds(), revision=rev)[0]:
            worker_id, run_id, task_id = self.keys.split(held.key, "held")
            if self.keys.own(run_id, task_id) in owned:
                continue
            key = etcd_work.lose(self.ctx, worker_id, held, now=now, counted=True)
            if key is not None:
                changed.append(key)
        for worker_id in etcd_cluster.orphans(self.client, self.keys):  # dead: back to the queue
            self._touched(etcd_cluster.unassign(self.client, self.keys, worker_id))
        soonest = float("inf")
        for item in self.client.scan(self.keys.active()):
            run_id = self.keys.split(item.key, "active")[0]
            deadline = loads(item.value).get("deadline")
            if deadline is not None and deadline > now:
                soonest = min(soonest, float(deadline))
            if deadline is not None and deadline <= now:
                ids = self._end_run(run_id, RunState.FAILED, "timeout", now=now)
                changed.extend((run_id, t) for t in ids)
        for item in self.client.scan(self.keys.ending(), keys_only=True):
            flow.cancel_unstarted(self.client, self.keys, self.keys.split(item.key, "ending")[0])
        runs = {
            self.keys.split(i.key, "prop")[0]
            for i in self.client.scan(self.keys.prop(), keys_only=True)
        }
        runs |= {k[0] for k in changed} | {
            self.keys.split(i.key, "active")[0]
            for i in self.client.scan(self.keys.active(), keys_only=True)
        }
        for run_id in runs:
            self._after(run_id, now=now)
        return changed, soonest

    def _after(self, run_id: str, *, now: float) -> None:
        flow.drain(self.client, self.keys, run_id, now=now)
        flow.maybe_end(self.client, self.keys, run_id, now=now)

    # ------------------------------------------------------------------ logs, waiting

    def get_log(self, run_id: str, task_id: str, *, attempt: int | None = None) -> str:
        """See Store.get_log."""
        if self.client.get(self.keys.run(run_id)) is None:
            raise errors.RunNotFound(run_id)
        task = self.client.get(self.keys.task(run_id, task_id))
        if task is None:
            raise errors.TaskNotFound(run_id, task_id)
        attempts = loads(task.value).get("attempts", [])
        number = attempt if attempt is not None else len(attempts)
        if number <= 0:
            return ""
        chunks = self.client.scan(self.keys.log(run_id, task_id, number))
        return etcd_logs.tail([i.value for i in chunks], self.log_limit)

    def wait(self, timeout: float, *, run_id: str | None = None) -> bool:
        """Block on the prefix watches until a change arrives that no earlier wait returned
        for, or `timeout` (see `etcd_watch` for the changes watched)."""
        # Every change since the last wait counts, this object's own included: a worker whose
        # slot thread finished a task while its main thread was busy must not sleep through it.
        self._watcher.start(self.client.revision)
        if run_id is not None:
            self._watcher.follow(run_id, self.client.revision)
        changed = self._watcher.wait(self._waited, max(0.0, timeout))
        self._waited = self._watcher.events
        return changed

    def close(self) -> None:
        """Stop the watch thread and close the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._watcher.close()
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


def _with_tasks(run: Run, tasks: tuple[object, ...]) -> Run:
    return dataclasses.replace(run, tasks=tasks)  # type: ignore[arg-type]


def _worker_dict(
    info: WorkerInfo, now: float, ttl: float, lease: int, running: int
) -> dict[str, object]:
    return {
        "id": info.id, "name": info.name, "host": info.host, "pid": info.pid,
        "labels": info.labels, "weight": info.weight, "capacity": info.capacity,
        "version": info.version, "running": running, "heartbeat_at": now,
        "expires_at": now + ttl, "ttl": ttl, "lease": lease,
    }  # fmt: skip


def _worker_info(d: dict[str, object]) -> WorkerInfo:
    fields = {k: v for k, v in d.items() if k not in ("ttl", "lease")}
    return WorkerInfo(**fields)  # type: ignore[arg-type]
