"""Submitting and retrying runs on the SQLite store: create, read, list, cancel, retry (inside
the caller's transaction)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Any

from runner import dispatch, errors
from runner.models import Attempt, Concurrency, Plan, Run, RunState, TaskState, WorkerInfo
from runner.store.sqlite import cluster, flow, gates, groups, hooks, rows, workers
from runner.store.sqlite.db import named


def create_run(
    db: sqlite3.Connection,
    plan: Plan,
    *,
    run_id: str,
    now: float,
    key: str | None,
    scheduled_time: float | None,
) -> Run:
    """Store the run and queue its root tasks (RunExists if the id or key is taken)."""
    insert_run(db, plan, run_id=run_id, now=now, key=key, scheduled_time=scheduled_time)
    return read_run(db, run_id, tasks=False)


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
    gated_roots, gated = _insert_tasks(db, run_id, plan, now=now)
    if plan.hooks:
        hooks.insert(db, run_id, plan)
    if plan.concurrency is not None:
        _join_group(db, run_id, plan.concurrency, now=now)
    gates.write_aging(db, run_id, plan)
    _, ended = flow.start(db, run_id, gated_roots, now=now, gates=gated)
    flow.propagate(db, run_id, ended, now=now)
    flow.maybe_end_run(db, run_id, now=now)


def _join_group(db: sqlite3.Connection, run_id: str, cc: Concurrency, *, now: float) -> None:
    """Queue the run in its concurrency group, first cancelling the group's unfinished runs
    when the plan says `cancelInProgress`."""
    if cc.cancel_in_progress:
        why = f"cancelled by run {run_id} (concurrency group {cc.group}, cancelInProgress)"
        for other in groups.unfinished(db, cc.group):
            cancel(db, other, now=now, reason=why)
    groups.join(db, run_id, cc.group)


def _insert_tasks(
    db: sqlite3.Connection, run_id: str, plan: Plan, *, now: float
) -> tuple[list[str], dict[str, str]]:
    """All task rows and dependency edges of a run, with one executemany each, in one pass over
    the plan's tasks (a streamed plan is made once here). A root without a gate goes in queued
    (as `flow.enqueue` would queue it, in plan order); the ids of the roots with a gate (for
    `flow.start` to decide), and every gate."""
    edges: list[tuple[str, str, str]] = []
    gated_roots: list[str] = []
    gated: dict[str, str] = {}
    first = flow.next_seq(db, 0)  # the sequence's next value: reserved below, once counted
    queued = 0

    def rows() -> Iterator[tuple[object, ...]]:
        nonlocal queued
        for seq, t in enumerate(plan.tasks):
            depends = list(dict.fromkeys(t.depends))
            edges.extend((run_id, dep, t.id) for dep in depends)
            gate = gates.gate_json(t)
            if gate is not None:
                gated[t.id] = gate
            ready = not depends and gate is None
            if not depends and gate is not None:
                gated_roots.append(t.id)
            yield (
                run_id,
                t.id,
                seq,
                t.name,
                json.dumps(t.to_dict()),
                json.dumps(depends),
                t.when.value,
                int(t.allow_failure),
                json.dumps(t.selector) if t.selector else None,
                "ready" if ready else "pending",
                t.priority,
                len(depends),
                cluster.locks_json(t),
                gate,
                first + queued if ready else None,
                now if ready else None,
                0.0,
            )
            queued += ready

    db.executemany(
        "INSERT INTO tasks (run_id, task_id, seq, name, spec, depends, when_, allow_failure,"
        " selector, state, priority, remaining_deps, locks, gate, ready_seq, ready_at,"
        " not_before) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    if queued:
        flow.next_seq(db, queued)
    db.executemany("INSERT INTO deps (run_id, dep_id, task_id) VALUES (?, ?, ?)", edges)
    return gated_roots, gated


def _check_free(db: sqlite3.Connection, run_id: str, key: str | None) -> None:
    if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        err = errors.RunExists(run_id, key or "")
        err.args = (f"run {run_id!r} already exists; choose another run id",)
        raise err
    if key is not None:
        row = db.execute("SELECT id FROM runs WHERE key = ?", (key,)).fetchone()
        if row:
            (holder,) = row
            raise errors.RunExists(holder, key)


def read_run(
    db: sqlite3.Connection,
    run_id: str,
    *,
    tasks: bool,
    now: float | None = None,
    states: Collection[TaskState] | None = None,
) -> Run:
    """The run (with its tasks in plan order and their attempts when `tasks`; only the tasks
    in `states` when given)."""
    row = named(db, f"SELECT {rows.RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    run = _with_group_reason(db, row)
    if not tasks:
        return run
    only, args = "", [run_id]
    if states is not None:
        only = f" AND state IN ({','.join('?' * len(states))})"
        args += [s.value for s in states]
    attempts: dict[str, list[Attempt]] = defaultdict(list)
    for a in db.execute(
        f"SELECT {rows.ATTEMPT_COLS} FROM attempts WHERE run_id = ?"
        + (
            ""
            if not only
            else f" AND task_id IN (SELECT task_id FROM tasks WHERE run_id = ?{only})"
        )
        + " ORDER BY task_id, number",
        args if not only else [run_id, *args],
    ):
        task_id, found_attempt = rows.attempt(a)
        attempts[task_id].append(found_attempt)
    found = db.execute(
        f"SELECT {rows.TASK_COLS} FROM tasks WHERE run_id = ?{only} ORDER BY seq", args
    ).fetchall()
    why = QueuedReasons(db, found, now=time.time() if now is None else now)
    records = tuple(rows.task(t, attempts, why.reason) for t in found)
    return dataclasses.replace(run, tasks=records, hooks=hooks.statuses(db, run_id))


class QueuedReasons:
    """Why a queued task waits: no live worker matches its selector, or its lock is full.
    Workers and holders are read only when some queued task has a selector or locks."""

    def __init__(self, db: sqlite3.Connection, found: list[Any], *, now: float) -> None:
        ready = TaskState.READY.value
        self.workers: list[WorkerInfo] = []
        # `found`: rows of rows.TASK_COLS (state third, then ..., selector, locks, depends,
        # gate, allow_failure, retries)
        if any(selector for _, _, state, *_, selector, _, _, _, _, _ in found if state == ready):
            self.workers = workers.live_workers(db, now=now)
        self.held = cluster.Held(db)

    def reason(self, selector: str | None, locks_json: str | None) -> str:
        """Why a queued task with these selector and locks columns is still queued."""
        if selector:
            missing = dispatch.no_worker_reason(json.loads(selector), self.workers)
            if missing:
                return missing
        if locks_json:
            locks = cluster.parse_locks(locks_json)
            self.held.free(locks)
            full = dispatch.lock_reason(locks, self.held.counts)
            if full:
                return full
        return "queued"


def list_runs(db: sqlite3.Connection, *, workflow: str | None, limit: int | None) -> list[Run]:
    """Runs newest first, without tasks."""
    where, args = ("WHERE workflow = ?", [workflow]) if workflow is not None else ("", [])
    sql = f"SELECT {rows.RUN_COLS} FROM runs {where} ORDER BY created_at DESC, id DESC LIMIT ?"
    return [
        _with_group_reason(db, r) for r in named(db, sql, (*args, -1 if limit is None else limit))
    ]


def _with_group_reason(db: sqlite3.Connection, row: sqlite3.Row) -> Run:
    """The run of a RUN_COLS row, with `queued: group G` while its group holds it back."""
    run = rows.run(row)
    if run.group is None or run.finished_at is not None:
        return run
    reason = groups.waiting_reason(db, run.group, row["cgroup_seq"])
    return dataclasses.replace(run, waiting_reason=reason) if reason else run


def cancel(db: sqlite3.Connection, run_id: str, *, now: float, reason: str) -> None:
    """Cancel an unfinished run and its not-started tasks (running ones are aborted through
    the heartbeat of their workers)."""
    row = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    (state,) = row
    if RunState(state).terminal:
        return
    db.execute(
        "UPDATE runs SET state = 'cancelled', finished_at = ?, reason = ? WHERE id = ?",
        (now, reason, run_id),
    )
    hooks.run_ended(db, run_id, now=now)
    flow.cancel_unstarted(db, run_id)


def retry(db: sqlite3.Connection, run_id: str, *, now: float, dry_run: bool) -> list[str]:
    """Put the failed, cancelled and skipped tasks of a finished run back; their ids."""
    row = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise errors.RunNotFound(run_id)
    (state,) = row
    tasks = named(
        db,
        "SELECT task_id, state, depends, when_ FROM tasks WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ).fetchall()
    if not RunState(state).terminal or any(t["state"] == TaskState.RUNNING.value for t in tasks):
        raise errors.UsageError(
            f"run {run_id} has not finished; wait for it (or `runner cancel {run_id}`) "
            "before retrying it"
        )
    again = {TaskState.FAILED.value, TaskState.CANCELLED.value, TaskState.SKIPPED.value}
    rerun = [t for t in tasks if t["state"] in again]
    if dry_run or not rerun:
        return [t["task_id"] for t in rerun]
    ids = {t["task_id"] for t in rerun}
    remaining = {t["task_id"]: sum(d in ids for d in json.loads(t["depends"])) for t in rerun}
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
    groups.rejoin(db, run_id)
    free = [(t["task_id"], t["when_"], t["depends"]) for t in rerun if remaining[t["task_id"]] == 0]
    _, skipped = flow.activate(db, run_id, free, now=now)
    flow.propagate(db, run_id, skipped, now=now)
    flow.maybe_end_run(db, run_id, now=now)
    return [t["task_id"] for t in rerun]
