"""The SQLite store's queue: claiming tasks and recording how attempts ended (in a transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from runner import errors, transitions
from runner.models import (
    AttemptState,
    Lease,
    Outcome,
    Reason,
    RunContext,
    TaskSpec,
    TaskState,
)
from runner.store import sqlite_cluster as cluster
from runner.store import sqlite_ops as ops

_CLAIMABLE = (
    "SELECT t.run_id, t.task_id, t.selector, r.parallelism, t.locks, t.assigned_to, r.dispatch,"
    " t.attempts, t.spec"
    " FROM tasks t INDEXED BY tasks_queue CROSS JOIN runs r ON r.id = t.run_id"
    " WHERE t.ready_seq IS NOT NULL AND t.not_before <= ? AND r.finished_at IS NULL"
    " ORDER BY t.priority DESC, t.ready_seq"
)
# A worker's assignments come first; the partial index is empty unless a dispatcher assigns.
# The dispatcher matched the selector already; 'pull' marks the rows as not reserved.
_ASSIGNED = (
    "SELECT t.run_id, t.task_id, NULL, r.parallelism, t.locks, NULL, 'pull', t.attempts, t.spec"
    " FROM tasks t INDEXED BY tasks_assigned CROSS JOIN runs r ON r.id = t.run_id"
    " WHERE t.assigned_to = ? AND t.ready_seq IS NOT NULL AND t.not_before <= ?"
    " AND r.finished_at IS NULL ORDER BY t.priority DESC, t.ready_seq"
)

# (run_id, task_id, locks JSON, attempts so far, spec JSON)
Picked = tuple[str, str, str | None, int, str]
Row = tuple[str, str, str | None, int | None, str | None, str | None, str | None, int, str]


class _Picker:
    """Admits queue rows for one claim: selector, parallelism, reservation and locks."""

    def __init__(self, db: sqlite3.Connection, labels: Mapping[str, str] | None, *,
                 now: float) -> None:  # fmt: skip
        self.db = db
        self.labels = labels
        self.mode = cluster.mode(db, now=now)
        self.held = cluster.Held(db)
        self.running: dict[str, int] = {}
        self.picked: list[Picked] = []

    def offer(self, row: Row) -> None:
        run_id, task_id, selector, parallelism, locks, assigned, run_dispatch, tries, spec = row
        if assigned is not None or cluster.reserved(run_dispatch, self.mode):
            return
        if selector and not transitions.selector_matches(json.loads(selector), self.labels):
            return
        if parallelism is not None and not self._room(run_id, parallelism):
            return
        if locks:
            wanted = cluster.parse_locks(locks)
            if not self.held.free(wanted):
                return
            self.held.take(wanted)
        if parallelism is not None:
            self.running[run_id] += 1
        self.picked.append((run_id, task_id, locks, tries, spec))

    def _room(self, run_id: str, parallelism: int) -> bool:
        if run_id not in self.running:
            self.running[run_id] = self.db.execute(
                "SELECT count(*) FROM tasks WHERE run_id = ? AND state = 'running'", (run_id,)
            ).fetchone()[0]
        return self.running[run_id] < parallelism


def pick(
    db: sqlite3.Connection,
    worker_id: str,
    *,
    now: float,
    limit: int,
    labels: Mapping[str, str] | None,
) -> list[Picked]:
    """The tasks to claim: the worker's assignments first, then the shared queue, each walked
    in priority, then FIFO order."""
    picker = _Picker(db, labels, now=now)
    for query, args in ((_ASSIGNED, (worker_id, now)), (_CLAIMABLE, (now,))):
        for row in db.execute(query, args):
            if len(picker.picked) >= limit:
                return picker.picked
            picker.offer(row)
    return picker.picked


@dataclass(frozen=True, slots=True)
class Opened:
    """An attempt opened in the claim's transaction; `lease()` builds its Lease after the
    commit, so parsing the spec does not lengthen the time the store's write lock is held."""

    run_id: str
    task_id: str
    attempt: int
    token: int
    worker_id: str
    spec_json: str
    spec: TaskSpec | None  # parsed already when its templates needed upstream outputs
    context: RunContext

    def lease(self) -> Lease:
        spec = self.spec or TaskSpec.from_dict(ops.parse(self.spec_json))
        return Lease(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt,
                     token=self.token, worker_id=self.worker_id, spec=spec,
                     context=self.context)  # fmt: skip


def open_attempts(
    db: sqlite3.Connection, worker_id: str, picked: list[Picked], *, now: float
) -> list[Opened]:
    """Make the picked tasks running under new attempts and fencing tokens."""
    if not picked:
        return []
    first = ops.next_seq(db, len(picked))
    runs: dict[str, RunContext] = {}
    opened = []
    for token, (run_id, task_id, locks, tries, spec_json) in enumerate(picked, start=first):
        attempt = tries + 1
        _open_attempt(db, worker_id, (run_id, task_id), attempt, token, now=now)
        if locks:
            cluster.acquire(db, locks, (run_id, task_id), attempt, token=token,
                            worker_id=worker_id)  # fmt: skip
        if run_id not in runs:
            runs[run_id] = _start_run(db, run_id, now=now)
        spec, context = None, runs[run_id]
        if "${{" in spec_json:  # templates: maybe upstream outputs to read now
            spec = TaskSpec.from_dict(ops.parse(spec_json))
            context = _with_outputs(db, context, transitions.output_refs(spec))
        opened.append(Opened(run_id, task_id, attempt, token, worker_id, spec_json, spec,
                             context))  # fmt: skip
    return opened


def _open_attempt(
    db: sqlite3.Connection,
    worker_id: str,
    key: tuple[str, str],
    attempt: int,
    token: int,
    *,
    now: float,
) -> None:
    """The task (read by `pick` in this transaction) becomes running with a new attempt owned by
    the worker. No RETURNING: each statement is one step of SQLite, and each step releases and
    takes back the GIL, which the slot threads are waiting for."""
    db.execute(
        "UPDATE tasks SET state = 'running', ready_seq = NULL, assigned_to = NULL,"
        " attempts = ? WHERE run_id = ? AND task_id = ?",
        (attempt, *key),
    )
    db.execute(
        "INSERT INTO ownership (token, run_id, task_id, attempt, worker_id) VALUES (?,?,?,?,?)",
        (token, *key, attempt, worker_id),
    )
    db.execute(
        "INSERT INTO attempts (run_id, task_id, number, state, worker, token, started_at)"
        " VALUES (?, ?, ?, 'running', ?, ?, ?)",
        (*key, attempt, worker_id, token, now),
    )


def _start_run(db: sqlite3.Connection, run_id: str, *, now: float) -> RunContext:
    """Mark the run running at its first claim (one statement); its template context."""
    params, scheduled = db.execute(
        "UPDATE runs SET state = iif(state = 'pending', 'running', state),"
        " started_at = iif(state = 'pending', ?, started_at) WHERE id = ?"
        " RETURNING params, scheduled_time",
        (now, run_id),
    ).fetchone()
    return RunContext(run_id=run_id, scheduled_time=scheduled, params=ops.parse(params))


def _with_outputs(db: sqlite3.Connection, ctx: RunContext, refs: set[str]) -> RunContext:
    """The context with the outputs of the referenced tasks (by id or name), keyed by id."""
    if not refs:
        return ctx
    names = json.dumps(sorted(refs))
    found = db.execute(
        "SELECT task_id, outputs FROM tasks WHERE run_id = ? AND (task_id IN"
        " (SELECT value FROM json_each(?)) OR name IN (SELECT value FROM json_each(?)))",
        (ctx.run_id, names, names),
    ).fetchall()
    outputs = {tid: ops.loads(out) for tid, out in found}
    return RunContext(
        run_id=ctx.run_id, scheduled_time=ctx.scheduled_time, params=ctx.params, outputs=outputs
    )


def check_owner(db: sqlite3.Connection, lease: Lease) -> None:
    """LeaseLost unless the ownership record still carries the lease's token (for writes
    during the attempt; a finish releases the record instead: `release_owner`)."""
    row = db.execute(
        "SELECT o.run_id, o.task_id, o.attempt, o.worker_id, w.expires_at"
        " FROM ownership o LEFT JOIN workers w ON w.id = o.worker_id WHERE o.token = ?",
        (lease.token,),
    ).fetchone()
    mine = (lease.run_id, lease.task_id, lease.attempt, lease.worker_id)
    if row is None or row[4] is None or tuple(row[:4]) != mine:
        raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)


def worker_lease(db: sqlite3.Connection, worker_id: str) -> tuple[float, bool] | None:
    """The worker's lease: (expires_at, draining), or None when it has none."""
    row = db.execute(
        "SELECT expires_at, draining FROM workers WHERE id = ?", (worker_id,)
    ).fetchone()
    return None if row is None else (float(row[0]), bool(row[1]))


def release_owner(db: sqlite3.Connection, lease: Lease) -> bool:
    """Delete the attempt's ownership record if it still carries the lease's token (the
    caller checked the worker's lease); False, with nothing written, when it does not."""
    deleted = db.execute(
        "DELETE FROM ownership WHERE token = ? AND run_id = ? AND task_id = ? AND attempt = ?"
        " AND worker_id = ?",
        (lease.token, lease.run_id, lease.task_id, lease.attempt, lease.worker_id),
    ).rowcount
    return deleted == 1


def record(db: sqlite3.Connection, lease: Lease, outcome: Outcome, *, now: float) -> None:
    """Write the attempt's end and move its task: done, retrying, or cancelled."""
    run_id, task_id = lease.key
    if outcome.succeeded:
        state = AttemptState.SUCCEEDED
    elif outcome.reason is Reason.CANCELLED:
        state = AttemptState.CANCELLED
    else:
        state = AttemptState.FAILED
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
        left = ops.count_done(db, run_id)  # None: the run has ended
        if left is not None:
            ops.complete_task(db, run_id, task_id, TaskState.SUCCEEDED, now=now,
                              outputs=outputs, left=left)  # fmt: skip
            return
    run_state = ops.run_state(db, run_id)
    if outputs is not None:
        db.execute(
            "UPDATE tasks SET outputs = ? WHERE run_id = ? AND task_id = ?",
            (outputs, run_id, task_id),
        )
    if run_state.terminal:
        ops.set_terminal(db, run_id, [task_id], TaskState.CANCELLED)
    else:
        _failed(db, lease, outcome.reason, now=now)


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
    spec = TaskSpec.from_dict(ops.parse(spec_json))
    delay = transitions.retry_delay(spec, failed, reason)
    if delay is None:
        ops.complete_task(db, lease.run_id, lease.task_id, TaskState.FAILED, now=now)
    else:
        ops.enqueue(
            db,
            lease.run_id,
            [lease.task_id],
            now=now,
            not_before=now + delay,
            state=TaskState.RETRYING,
        )
