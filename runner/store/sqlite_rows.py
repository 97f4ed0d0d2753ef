"""Runs in and out of SQLite rows: create, read, list, cancel, retry (inside a transaction)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from runner import dispatch, errors
from runner.models import (
    Attempt,
    AttemptState,
    Plan,
    Reason,
    Run,
    RunState,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from runner.store import sqlite_cluster as cluster
from runner.store import sqlite_ops as ops

_RUN_COLS = (
    "id, workflow, state, params, created_at, started_at, finished_at, key, scheduled_time,"
    " plan_hash, tasks_total, tasks_done, reason"
)
_TASK_COLS = (
    "task_id, name, state, priority, remaining_deps, not_before, outputs, losses, ready_at,"
    " selector, locks"
)
_ATTEMPT_COLS = (
    "task_id, number, state, worker, token, exit_code, reason, error, started_at, finished_at"
)


def insert_run(
    db: sqlite3.Connection,
    plan: Plan,
    *,
    run_id: str,
    now: float,
    key: str | None,
    scheduled_time: float | None,
) -> None:
    """Write the run, its tasks and dependency edges, and queue the tasks without dependencies."""
    _check_free(db, run_id, key)
    deadline = None if plan.timeout is None else now + plan.timeout
    db.execute(
        "INSERT INTO runs (id, workflow, state, params, created_at, key, scheduled_time,"
        " plan_hash, fail_fast, parallelism, timeout, deadline, tasks_total, tasks_done, dispatch)"
        " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        (
            run_id,
            plan.workflow,
            json.dumps(plan.params),
            now,
            key,
            scheduled_time,
            plan.hash,
            int(plan.fail_fast),
            plan.parallelism,
            plan.timeout,
            deadline,
            len(plan.tasks),
            plan.dispatch,
        ),
    )
    _insert_tasks(db, run_id, plan)
    ops.enqueue(db, run_id, [t.id for t in plan.tasks if not t.depends], now=now)
    ops.maybe_end_run(db, run_id, now=now)


def _insert_tasks(db: sqlite3.Connection, run_id: str, plan: Plan) -> None:
    """All task rows and dependency edges of a run, with one executemany each."""
    rows: list[tuple[object, ...]] = []
    edges: list[tuple[str, str, str]] = []
    for seq, t in enumerate(plan.tasks):
        depends = list(dict.fromkeys(t.depends))
        edges.extend((run_id, dep, t.id) for dep in depends)
        selector = json.dumps(t.selector) if t.selector else None
        spec = json.dumps(t.to_dict())
        rows.append((run_id, t.id, seq, t.name, spec, json.dumps(depends), t.when.value,
                     int(t.allow_failure), selector, t.priority, len(depends),
                     cluster.locks_json(t)))  # fmt: skip
    db.executemany(
        "INSERT INTO tasks (run_id, task_id, seq, name, spec, depends, when_, allow_failure,"
        " selector, state, priority, remaining_deps, locks)"
        " VALUES (?,?,?,?,?,?,?,?,?,'pending',?,?,?)",
        rows,
    )
    db.executemany("INSERT INTO deps (run_id, dep_id, task_id) VALUES (?, ?, ?)", edges)


def _check_free(db: sqlite3.Connection, run_id: str, key: str | None) -> None:
    if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        err = errors.RunExists(run_id, key or "")
        err.args = (f"run {run_id!r} already exists; choose another run id",)
        raise err
    if key is not None:
        row = db.execute("SELECT id FROM runs WHERE key = ?", (key,)).fetchone()
        if row:
            raise errors.RunExists(row[0], key)


def read_run(db: sqlite3.Connection, run_id: str, *, tasks: bool, now: float | None = None) -> Run:
    """The run (with its tasks in plan order and their attempts when `tasks`)."""
    row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    run = _run(row)
    if not tasks:
        return run
    attempts: dict[str, list[Attempt]] = defaultdict(list)
    for a in db.execute(
        f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE run_id = ? ORDER BY task_id, number",
        (run_id,),
    ):
        attempts[a[0]].append(_attempt(a))
    found = db.execute(
        f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    why = _QueuedReasons(db, found, now=time.time() if now is None else now)
    records = tuple(_task(t, attempts.get(t[0], []), why) for t in found)
    return dataclasses.replace(run, tasks=records)


class _QueuedReasons:
    """Why a queued task waits: no live worker matches its selector, or its lock is full.
    Workers and holders are read only when some queued task has a selector or locks."""

    def __init__(self, db: sqlite3.Connection, found: list[Any], *, now: float) -> None:
        queued = [t for t in found if t[2] == TaskState.READY.value]
        self.workers: list[WorkerInfo] = []
        if any(t[9] for t in queued):
            self.workers = cluster.live_workers(db, now=now)
        self.held = cluster.Held(db)

    def reason(self, t: Any) -> str:
        if t[9]:
            missing = dispatch.no_worker_reason(json.loads(t[9]), self.workers)
            if missing:
                return missing
        if t[10]:
            locks = cluster.parse_locks(t[10])
            self.held.free(locks)
            full = dispatch.lock_reason(locks, self.held.counts)
            if full:
                return full
        return "queued"


def list_runs(db: sqlite3.Connection, *, workflow: str | None, limit: int | None) -> list[Run]:
    """Runs newest first, without tasks."""
    where, args = ("WHERE workflow = ?", [workflow]) if workflow is not None else ("", [])
    sql = f"SELECT {_RUN_COLS} FROM runs {where} ORDER BY created_at DESC, id DESC LIMIT ?"
    return [_run(r) for r in db.execute(sql, (*args, -1 if limit is None else limit))]


def cancel(db: sqlite3.Connection, run_id: str, *, now: float, reason: str) -> None:
    """Cancel an unfinished run and its not-started tasks (running ones are aborted through
    the heartbeat of their workers)."""
    row = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    if RunState(row[0]).terminal:
        return
    db.execute(
        "UPDATE runs SET state = 'cancelled', finished_at = ?, reason = ? WHERE id = ?",
        (now, reason, run_id),
    )
    ops.cancel_unstarted(db, run_id)


def retry(db: sqlite3.Connection, run_id: str, *, now: float, dry_run: bool) -> list[str]:
    """Put the failed, cancelled and skipped tasks of a finished run back; their ids."""
    row = db.execute("SELECT state, timeout FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    tasks = db.execute(
        "SELECT task_id, state, depends, when_ FROM tasks WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ).fetchall()
    if not RunState(row[0]).terminal or any(t[1] == TaskState.RUNNING.value for t in tasks):
        raise errors.UsageError(
            f"run {run_id} has not finished; wait for it (or `runner cancel {run_id}`) "
            "before retrying it"
        )
    again = {TaskState.FAILED.value, TaskState.CANCELLED.value, TaskState.SKIPPED.value}
    rerun = [t for t in tasks if t[1] in again]
    if dry_run or not rerun:
        return [t[0] for t in rerun]
    ids = {t[0] for t in rerun}
    remaining = {t[0]: sum(d in ids for d in json.loads(t[2])) for t in rerun}
    db.executemany(
        "UPDATE tasks SET state = 'pending', ready_seq = NULL, remaining_deps = ?,"
        " failed_attempts = 0, losses = 0, not_before = 0 WHERE run_id = ? AND task_id = ?",
        [(remaining[tid], run_id, tid) for tid in remaining],
    )
    db.execute(
        "UPDATE runs SET state = 'running', finished_at = NULL, reason = NULL,"
        " tasks_done = tasks_done - ?, deadline = ? + timeout WHERE id = ?",
        (len(rerun), now, run_id),
    )
    free = [(t[0], t[3], t[2]) for t in rerun if remaining[t[0]] == 0]
    _, skipped = ops.activate(db, run_id, free, now=now)
    ops.propagate(db, run_id, skipped, now=now)
    ops.maybe_end_run(db, run_id, now=now)
    return [t[0] for t in rerun]


def read_log(db: sqlite3.Connection, run_id: str, task_id: str, attempt: int | None) -> str:
    """The stored log of one attempt (the latest by default), "" if none."""
    row = db.execute(
        "SELECT attempts FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)
    ).fetchone()
    if row is None:
        if not db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            raise errors.RunNotFound(run_id)
        raise errors.TaskNotFound(run_id, task_id)
    number = row[0] if attempt is None else attempt
    text = db.execute(
        "SELECT text FROM logs WHERE run_id = ? AND task_id = ? AND number = ?",
        (run_id, task_id, number),
    ).fetchone()
    return "" if text is None else str(text[0])


def append_log(db: sqlite3.Connection, key: tuple[str, str, int], text: str, *, limit: int) -> None:
    """Append to an attempt's log, keeping its last `limit` bytes (cut at a character)."""
    data = text.encode(errors="replace")
    if len(data) < limit:
        row = db.execute(
            "SELECT text FROM logs WHERE run_id = ? AND task_id = ? AND number = ?", key
        ).fetchone()
        if row is not None:
            data = row[0].encode() + data
    if len(data) > limit:
        # A cut may split a character: drop its leading continuation bytes.
        kept = data[len(data) - limit :].decode("utf-8", errors="ignore")
    else:
        kept = data.decode()
    db.execute(
        "INSERT OR REPLACE INTO logs (run_id, task_id, number, text) VALUES (?, ?, ?, ?)",
        (*key, kept),
    )


def _run(r: Any) -> Run:
    return Run(
        id=r[0],
        workflow=r[1],
        state=RunState(r[2]),
        params=ops.parse(r[3]),
        created_at=r[4],
        started_at=r[5],
        finished_at=r[6],
        key=r[7],
        scheduled_time=r[8],
        plan_hash=r[9],
        tasks_total=r[10],
        tasks_done=r[11],
        reason=r[12],
    )


def _task(t: Any, attempts: list[Attempt], why: _QueuedReasons) -> TaskRecord:
    state = TaskState(t[2])
    reason = why.reason(t) if state is TaskState.READY else _waiting_reason(state, t[4], t[5])
    return TaskRecord(
        id=t[0],
        name=t[1],
        state=state,
        priority=t[3],
        waiting_reason=reason,
        outputs=ops.loads(t[6]),
        attempts=tuple(attempts),
        losses=t[7],
        ready_at=t[8],
    )


def _waiting_reason(state: TaskState, remaining: int, not_before: float) -> str | None:
    if state is TaskState.PENDING:
        return f"waiting for {remaining} dependenc{'y' if remaining == 1 else 'ies'}"
    if state is TaskState.RETRYING:
        until = datetime.fromtimestamp(not_before, UTC).isoformat(timespec="seconds")
        return f"retry after backoff until {until.replace('+00:00', 'Z')}"
    if state is TaskState.READY:
        return "queued"
    return None


def _attempt(a: Any) -> Attempt:
    return Attempt(
        number=a[1],
        state=AttemptState(a[2]),
        worker=a[3],
        token=a[4],
        exit_code=a[5],
        reason=None if a[6] is None else Reason(a[6]),
        error=a[7],
        started_at=a[8],
        finished_at=a[9],
    )
