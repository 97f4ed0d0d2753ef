"""Finishing attempts on the SQLite store: fenced by the lease's token, recording how the
attempt ended and moving the run on, with an optional claim of the worker's next tasks.

Group commit: finishes that threads of one process ask for while another one holds the store
commit in one transaction (a stale token fails only its own: see `GroupCommit.finish_in`), which
saves a BEGIN/COMMIT and the WAL frames of the pages they share.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from runner import errors, interrupts, transitions
from runner.failpoints import Failpoints
from runner.models import AttemptState, Lease, Outcome, Reason, TaskKey, TaskSpec, TaskState
from runner.store.sqlite import claim as claiming
from runner.store.sqlite import cluster, flow, logs, rows, workers
from runner.store.sqlite.db import Database

# Lease rows read in one transaction: worker id -> (expires_at, draining), or None.
WorkerCache = dict[str, tuple[float, bool] | None]


@dataclass(slots=True)
class Request:
    """A finish waiting for a transaction; `opened`, `error` and `done` are its answer."""

    lease: Lease
    outcome: Outcome
    now: float
    claim: int
    labels: Mapping[str, str] | None
    opened: list[claiming.Opened] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False
    # offsets to the latest and the earliest live clock that disagree with ours
    # (runner.store.liveness): a retry's backoff is written from the latest, the claim that
    # follows judges backoffs by the earliest
    ahead: float = 0.0
    behind: float = 0.0


class GroupCommit:
    """The finishes queued by the threads of one store object, committed together."""

    def __init__(self, db: Database, *, log_limit: int, failpoints: Failpoints) -> None:
        self.db = db
        self.log_limit = log_limit
        self.failpoints = failpoints
        self._pending: list[Request] = []  # finishes waiting for the store's lock
        self._pending_lock = threading.Lock()

    def queued(self) -> int:
        """How many finishes wait for the store's lock."""
        with self._pending_lock:
            return len(self._pending)

    def commit(self, reqs: list[Request]) -> None:
        """Commit `reqs`, with whatever finishes other threads queued meanwhile; each
        request's error, if any, is left in it."""
        with self._pending_lock:
            self._pending.extend(reqs)
        changed = False
        with interrupts.deferred():  # the main thread's Ctrl-C waits (see Database.tx)
            with self.db.lock:
                if not all(r.done for r in reqs):
                    with self._pending_lock:
                        batch, self._pending = self._pending, []
                    changed = self._commit_batch(batch, ours={id(r) for r in reqs})
            if changed:
                self.db.notify()

    def _commit_batch(self, batch: list[Request], *, ours: set[int]) -> bool:
        """One transaction for `batch` (the caller holds the store's lock); whether it changed
        anything."""
        try:
            with self.db.open(write=True) as (conn, done):
                cache: WorkerCache = {}
                for part in _parts(batch):
                    if len(part) > 1:
                        self.succeed_in(conn, part, cache)
                    else:
                        self.finish_in(conn, part[0], cache, alone=len(batch) == 1)
        except BaseException as exc:
            for r in batch:
                r.done = True
                if id(r) not in ours:  # theirs failed with ours: their workers retry
                    r.error = errors.StoreError(f"store {self.db.path}: {exc}")
            raise
        for r in batch:
            r.done = True
        return done.changed

    def finish_in(
        self, conn: sqlite3.Connection, req: Request, cache: WorkerCache, *, alone: bool
    ) -> None:
        """One finish inside the open transaction. Its first write, which releases the
        ownership record, is also its fencing check: a stale token writes nothing (so a batch
        needs no savepoints) and fails only its own request. `cache` holds the lease rows
        read in this transaction."""
        lease, outcome, now = req.lease, req.outcome, req.now
        if lease.worker_id not in cache:
            cache[lease.worker_id] = workers.worker_lease(conn, lease.worker_id)
        lease_row = cache[lease.worker_id]
        draining = lease_row is not None and lease_row[1]
        if lease_row is None or not release_owner(conn, lease):
            exc = errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
            if alone:
                raise exc
            req.error, req.opened = exc, []
            return
        if lease.spec.mutex or lease.spec.semaphore:
            cluster.release(conn, lease.token)
        if outcome.log_tail:
            key = (lease.run_id, lease.task_id, lease.attempt)
            logs.append(conn, key, outcome.log_tail, limit=self.log_limit)
        record(conn, lease, outcome, now=now)
        if req.ahead:
            flow.push_backoff(conn, lease.key, by=req.ahead)
        self.failpoints.hit("finish.before_commit")
        if req.claim > 0 and not draining:
            req.opened = claiming.claim_in(
                conn,
                lease.worker_id,
                now=now + req.behind,
                limit=req.claim,
                labels=req.labels,
                failpoints=self.failpoints,
            )

    def succeed_in(self, conn: sqlite3.Connection, reqs: list[Request], cache: WorkerCache) -> None:
        """Several plain successes (`_plain`) inside the open transaction, as `finish_in` would
        record them one by one, in a few statements for all: the lease checks, the fencing
        deletes (one statement: which tokens it released), then `record_successes`."""
        live: list[Request] = []
        for req in reqs:
            worker_id = req.lease.worker_id
            if worker_id not in cache:
                cache[worker_id] = workers.worker_lease(conn, worker_id)
            if cache[worker_id] is None:
                req.error, req.opened = _lost(req.lease), []
            else:
                live.append(req)
        released = release_owners(conn, [req.lease for req in live])
        kept: list[Request] = []
        for req in live:
            if req.lease.token in released:
                kept.append(req)
            else:
                req.error, req.opened = _lost(req.lease), []
        for req in kept:
            if req.outcome.log_tail:
                key = (req.lease.run_id, req.lease.task_id, req.lease.attempt)
                logs.append(conn, key, req.outcome.log_tail, limit=self.log_limit)
        record_successes(conn, [(req.lease, req.outcome, req.now) for req in kept])
        for _ in kept:
            self.failpoints.hit("finish.before_commit")


PLAIN_MAX = 200  # plain successes recorded together, at most (5 SQL variables each)


def _plain(req: Request) -> bool:
    """A finish `succeed_in` records: a success that claims nothing, takes no backoff and
    holds no mutex or semaphore."""
    spec = req.lease.spec
    return (
        req.outcome.succeeded
        and req.claim == 0
        and not req.ahead
        and spec.mutex is None
        and spec.semaphore is None
    )


def _parts(batch: list[Request]) -> Iterator[list[Request]]:
    """The batch in order: runs of plain successes together, each other finish alone."""
    run: list[Request] = []
    for req in batch:
        plain = _plain(req)
        if run and (not plain or len(run) == PLAIN_MAX):
            yield run
            run = []
        if plain:
            run.append(req)
        else:
            yield [req]
    if run:
        yield run


def _lost(lease: Lease) -> errors.LeaseLost:
    return errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)


def finish(group: GroupCommit, req: Request) -> list[Lease]:
    """See SqliteStore.finish: commit one finish (with others queued meanwhile)."""
    group.commit([req])
    if req.error is not None:
        raise req.error
    group.failpoints.hit("finish.after_commit")
    return claiming.leases(req.opened, group.failpoints)


def finish_many(
    group: GroupCommit,
    done: Sequence[tuple[Lease, Outcome]],
    *,
    now: float,
    claim: int,
    labels: Mapping[str, str] | None,
    ahead: float = 0.0,
    behind: float = 0.0,
) -> tuple[list[TaskKey], list[Lease]]:
    """See Store.finish_many: one transaction; a stale token fails only its own finish;
    the last one claims."""
    reqs = [
        Request(lease, outcome, now, 0, labels, ahead=ahead, behind=behind)
        for lease, outcome in done
    ]
    if reqs:
        reqs[-1].claim = claim
    try:
        group.commit(reqs)
    except errors.LeaseLost as exc:  # a batch of one raises it
        reqs[0].error = exc
    lost: list[TaskKey] = []
    for r in reqs:
        if isinstance(r.error, errors.LeaseLost):
            lost.append(r.lease.key)
        elif r.error is not None:
            raise r.error
    group.failpoints.hit("finish.after_commit")
    opened = [o for r in reqs for o in r.opened]
    return lost, claiming.leases(opened, group.failpoints)


def release_owner(db: sqlite3.Connection, lease: Lease) -> bool:
    """Delete the attempt's ownership record if it still carries the lease's token (the
    caller checked the worker's lease); False, with nothing written, when it does not."""
    deleted = db.execute(
        "DELETE FROM ownership WHERE token = ? AND run_id = ? AND task_id = ? AND attempt = ?"
        " AND worker_id = ?",
        (lease.token, lease.run_id, lease.task_id, lease.attempt, lease.worker_id),
    ).rowcount
    return deleted == 1


def release_owners(db: sqlite3.Connection, leases: list[Lease]) -> set[int]:
    """`release_owner` for many leases in one statement: the tokens whose records it deleted
    (each matching its lease's run, task, attempt and worker, as there)."""
    if not leases:
        return set()
    rows = json.dumps([[x.token, x.run_id, x.task_id, x.attempt, x.worker_id] for x in leases])
    return {
        token
        for (token,) in db.execute(
            "DELETE FROM ownership WHERE token IN (SELECT o.token FROM json_each(?) j"
            " JOIN ownership o ON o.token = json_extract(j.value, '$[0]')"
            " AND o.run_id = json_extract(j.value, '$[1]')"
            " AND o.task_id = json_extract(j.value, '$[2]')"
            " AND o.attempt = json_extract(j.value, '$[3]')"
            " AND o.worker_id = json_extract(j.value, '$[4]')) RETURNING token",
            (rows,),
        )
    }


def record_successes(db: sqlite3.Connection, done: list[tuple[Lease, Outcome, float]]) -> None:
    """`record` for successful attempts (lease, outcome, finish time), in order: per run, its
    count, the attempts' and the tasks' ends in one statement each; successors (only of the
    tasks that have some) and the run's end as `flow.complete_task` moves them. The tasks of a
    run that has ended go `record`'s way, one by one."""
    runs: dict[str, list[tuple[Lease, Outcome, float]]] = {}
    for item in done:
        runs.setdefault(item[0].run_id, []).append(item)
    for run_id, items in runs.items():
        row = db.execute(
            "UPDATE runs SET tasks_done = tasks_done + ? WHERE id = ? AND finished_at IS NULL"
            " RETURNING tasks_total - tasks_done",
            (len(items), run_id),
        ).fetchone()
        if row is None:  # the run has ended: none is counted
            for lease, outcome, now in items:
                record(db, lease, outcome, now=now)
            continue
        db.executemany(
            "UPDATE attempts SET state = 'succeeded', exit_code = ?, reason = ?, error = ?,"
            " finished_at = ?, started_at = coalesce(?, started_at)"
            " WHERE run_id = ? AND task_id = ? AND number = ?",
            [
                (o.exit_code, o.reason.value, o.error, now, o.started_at, *x.key, x.attempt)
                for x, o, now in items
            ],
        )
        db.executemany(
            "UPDATE tasks SET state = 'succeeded', ready_seq = NULL, assigned_to = NULL,"
            " outputs = ? WHERE run_id = ? AND task_id = ?",
            [(_outputs_json(o), *x.key) for x, o, _ in items],
        )
        ids = json.dumps([x.task_id for x, _, _ in items])
        ahead = {
            dep
            for (dep,) in db.execute(
                "SELECT DISTINCT dep_id FROM deps WHERE run_id = ?"
                " AND dep_id IN (SELECT value FROM json_each(?))",
                (run_id, ids),
            )
        }
        skipped = 0
        for lease, _, now in items:
            if lease.task_id in ahead:
                skipped += flow.propagate(db, run_id, [lease.task_id], now=now)
        if row[0] - skipped <= 0:
            flow.maybe_end_run(db, run_id, now=items[-1][2])


def record(db: sqlite3.Connection, lease: Lease, outcome: Outcome, *, now: float) -> None:
    """Write the attempt's end and move its task: done, retrying, or cancelled."""
    run_id, task_id = lease.key
    state = _attempt_state(outcome)
    db.execute(
        "UPDATE attempts SET state = ?, exit_code = ?, reason = ?, error = ?, finished_at = ?,"
        " started_at = coalesce(?, started_at) WHERE run_id = ? AND task_id = ? AND number = ?",
        (
            state.value,
            outcome.exit_code,
            outcome.reason.value,
            outcome.error,
            now,
            outcome.started_at,
            run_id,
            task_id,
            lease.attempt,
        ),
    )
    outputs = _outputs_json(outcome)
    if outcome.succeeded:
        left = flow.count_done(db, run_id)  # None: the run has ended
        if left is not None:
            flow.complete_task(
                db, run_id, task_id, TaskState.SUCCEEDED, now=now, outputs=outputs, left=left
            )
            return
    run_state = flow.run_state(db, run_id)
    if outputs is not None:
        db.execute(
            "UPDATE tasks SET outputs = ? WHERE run_id = ? AND task_id = ?",
            (outputs, run_id, task_id),
        )
    if run_state.terminal:
        flow.set_terminal(db, run_id, [task_id], TaskState.CANCELLED)
    else:
        _failed(db, lease, outcome.reason, now=now)


def _attempt_state(outcome: Outcome) -> AttemptState:
    if outcome.succeeded:
        return AttemptState.SUCCEEDED
    if outcome.reason is Reason.CANCELLED:
        return AttemptState.CANCELLED
    return AttemptState.FAILED


def _outputs_json(outcome: Outcome) -> str | None:
    """The outputs column of a finished attempt: NULL for a failure that set none."""
    if outcome.outputs:
        return json.dumps(outcome.outputs)
    return "{}" if outcome.succeeded else None


def _failed(db: sqlite3.Connection, lease: Lease, reason: Reason, *, now: float) -> None:
    failed, spec_json = db.execute(
        "UPDATE tasks SET failed_attempts = failed_attempts + 1 WHERE run_id = ? AND task_id = ?"
        " RETURNING failed_attempts, spec",
        lease.key,
    ).fetchone()
    spec = TaskSpec.from_dict(rows.parse(spec_json))
    delay = transitions.retry_delay(spec, failed, reason)
    if delay is None:
        flow.complete_task(db, lease.run_id, lease.task_id, TaskState.FAILED, now=now)
    else:
        flow.enqueue(
            db,
            lease.run_id,
            [lease.task_id],
            now=now,
            not_before=now + delay,
            state=TaskState.RETRYING,
        )
