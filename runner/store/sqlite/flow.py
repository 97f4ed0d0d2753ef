"""How a run moves on the SQLite store: enqueueing ready tasks, terminal task states,
successors, and the run's end (inside the caller's transaction).

Each helper reads what a rule of `runner.transitions` needs, asks the rule and writes the
answer, so a store method composes them into one atomic transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from runner import transitions
from runner.models import RunState, TaskKey, TaskState, When
from runner.store.sqlite import gates as gating
from runner.store.sqlite import hooks

_UNSTARTED = ("pending", "ready", "retrying")
_TERMINAL_RUN = tuple(s.value for s in RunState if s.terminal)


def next_seq(db: sqlite3.Connection, n: int = 1) -> int:
    """Reserve `n` values of the store-wide sequence (fencing tokens, FIFO order); the first."""
    (last,) = db.execute(
        "UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value", (n,)
    ).fetchone()
    return int(last) - n + 1


def run_state(db: sqlite3.Connection, run_id: str) -> RunState:
    (state,) = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    return RunState(state)


def enqueue(
    db: sqlite3.Connection,
    run_id: str,
    task_ids: list[str],
    *,
    now: float,
    not_before: float = 0.0,
    state: TaskState = TaskState.READY,
) -> None:
    """Put tasks in the queue (or, as `retrying`, in it but not claimable before `not_before`)."""
    if not task_ids:
        return
    first = next_seq(db, len(task_ids))
    db.executemany(
        "UPDATE tasks SET state = ?, ready_seq = ?, ready_at = ?, not_before = ?,"
        " assigned_to = NULL"
        " WHERE run_id = ? AND task_id = ?",
        [
            (state.value, first + i, max(now, not_before), not_before, run_id, tid)
            for i, tid in enumerate(task_ids)
        ],
    )


def set_terminal(
    db: sqlite3.Connection,
    run_id: str,
    task_ids: list[str],
    state: TaskState,
    *,
    outputs: str | None = None,
    counted: bool = False,
) -> None:
    """Make tasks terminal (out of the queue) and count them as done for their run (unless
    the caller `counted` them already); with `outputs` (one task), write its outputs JSON in
    the same statement."""
    if outputs is not None:
        (task_id,) = task_ids
        db.execute(
            "UPDATE tasks SET state = ?, ready_seq = NULL, assigned_to = NULL, outputs = ?"
            " WHERE run_id = ? AND task_id = ?",
            (state.value, outputs, run_id, task_id),
        )
    else:
        db.executemany(
            "UPDATE tasks SET state = ?, ready_seq = NULL, assigned_to = NULL"
            " WHERE run_id = ? AND task_id = ?",
            [(state.value, run_id, tid) for tid in task_ids],
        )
    if not counted:
        db.execute(
            "UPDATE runs SET tasks_done = tasks_done + ? WHERE id = ?", (len(task_ids), run_id)
        )


def count_done(db: sqlite3.Connection, run_id: str) -> int | None:
    """Count one more task of a live run as done; how many are left, or None (nothing
    counted) when the run has ended."""
    row = db.execute(
        "UPDATE runs SET tasks_done = tasks_done + 1 WHERE id = ? AND finished_at IS NULL"
        " RETURNING tasks_total - tasks_done",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    (left,) = row
    return int(left)


def cancel_unstarted(db: sqlite3.Connection, run_id: str) -> list[str]:
    """Cancel the run's pending, ready and retrying tasks; their ids."""
    cancelled = [
        task_id
        for (task_id,) in db.execute(
            "UPDATE tasks SET state = 'cancelled', ready_seq = NULL, assigned_to = NULL"
            " WHERE run_id = ? AND state IN (?, ?, ?) RETURNING task_id",
            (run_id, *_UNSTARTED),
        ).fetchall()
    ]
    db.execute("UPDATE runs SET tasks_done = tasks_done + ? WHERE id = ?", (len(cancelled), run_id))
    return cancelled


def complete_task(
    db: sqlite3.Connection,
    run_id: str,
    task_id: str,
    state: TaskState,
    *,
    now: float,
    outputs: str | None = None,
    left: int | None = None,
) -> None:
    """A task reached a terminal state: failFast, successors, and the end of the run.
    `left`: the run's tasks still not terminal after this one, when the caller counted it
    done (`count_done`; then the run's end is only looked for when this task may be its
    last)."""
    set_terminal(db, run_id, [task_id], state, outputs=outputs, counted=left is not None)
    if state is TaskState.FAILED:
        allow, fail_fast = db.execute(
            "SELECT t.allow_failure, r.fail_fast FROM tasks t JOIN runs r ON r.id = t.run_id"
            " WHERE t.run_id = ? AND t.task_id = ?",
            (run_id, task_id),
        ).fetchone()
        if fail_fast and transitions.counts_as_failure(state, bool(allow)):
            cancel_unstarted(db, run_id)
            left = None
    skipped = propagate(db, run_id, [task_id], now=now)
    if left is None or left - skipped <= 0:
        maybe_end_run(db, run_id, now=now)


def propagate(db: sqlite3.Connection, run_id: str, done: Iterable[str], *, now: float) -> int:
    """Count terminal tasks off their successors; queue or skip (cascading) those now free.
    Returns how many it skipped."""
    frontier = list(done)
    skips = 0
    while frontier:
        rows = db.execute(
            "UPDATE tasks SET remaining_deps = remaining_deps - 1 WHERE run_id = ? AND task_id IN"
            " (SELECT task_id FROM deps WHERE run_id = ? AND dep_id = ?)"
            " RETURNING task_id, remaining_deps, state, when_, depends, gate",
            (run_id, run_id, frontier.pop()),
        ).fetchall()
        free = [
            (task_id, when, depends)
            for task_id, remaining, state, when, depends, _ in rows
            if remaining <= 0 and state == TaskState.PENDING.value
        ]
        known = {r[0]: r[5] for r in rows if r[5] is not None}
        _, skipped = activate(db, run_id, free, now=now, gates=known)
        frontier.extend(skipped)
        skips += len(skipped)
    return skips


def activate(
    db: sqlite3.Connection,
    run_id: str,
    free: list[tuple[str, str, str]],
    *,
    now: float,
    gates: dict[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Decide tasks whose dependencies are all terminal: queue them or mark them skipped
    (`if:` and forEach: `gates.sort`). `free` holds (task_id, when, depends JSON); `gates`
    the gate columns read with them, if any. Returns (queued ids, terminal ids)."""
    ready: list[str] = []
    skipped: list[str] = []
    for task_id, when, depends in free:
        deps = dep_states(db, run_id, depends)
        if transitions.decide(When(when), deps) is TaskState.READY:
            ready.append(task_id)
        else:
            skipped.append(task_id)
    if skipped:
        set_terminal(db, run_id, skipped, TaskState.SKIPPED)
    ready, ended = start(db, run_id, ready, now=now, gates=gates)
    return ready, skipped + ended


def start(
    db: sqlite3.Connection,
    run_id: str,
    ready: list[str],
    *,
    now: float,
    gates: dict[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Queue tasks free to run, after their `if:` and forEach (`gates.sort`): the queued ids
    (forEach instances among them) and the ids of gated tasks made terminal instead."""
    ready, ended = gating.sort(db, run_id, ready, gates)
    enqueue(db, run_id, ready, now=now)
    for task_id, state in ended:
        set_terminal(db, run_id, [task_id], state)
    if any(state is TaskState.FAILED for _, state in ended):
        _fail_fast(db, run_id)
    return ready, [task_id for task_id, _ in ended]


def _fail_fast(db: sqlite3.Connection, run_id: str) -> None:
    """A forEach task failed (not allowed to): cancel what has not started under failFast."""
    (fail_fast,) = db.execute("SELECT fail_fast FROM runs WHERE id = ?", (run_id,)).fetchone()
    if fail_fast:
        cancel_unstarted(db, run_id)


def dep_states(db: sqlite3.Connection, run_id: str, depends: str) -> list[transitions.DepState]:
    """(state, allowFailure) of the tasks named by a JSON list of task ids."""
    rows = db.execute(
        "SELECT state, allow_failure FROM tasks WHERE run_id = ?"
        " AND task_id IN (SELECT value FROM json_each(?))",
        (run_id, depends),
    ).fetchall()
    return [(TaskState(s), bool(a)) for s, a in rows]


def maybe_end_run(db: sqlite3.Connection, run_id: str, *, now: float) -> None:
    """End a running run whose tasks are all terminal, by `transitions.run_outcome`."""
    state, total, done = db.execute(
        "SELECT state, tasks_total, tasks_done FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    if done < total or state in _TERMINAL_RUN:
        return
    rows = db.execute(
        "SELECT state, allow_failure FROM tasks WHERE run_id = ?", (run_id,)
    ).fetchall()
    outcome = transitions.run_outcome((TaskState(s), bool(a)) for s, a in rows)
    db.execute(
        "UPDATE runs SET state = ?, finished_at = ? WHERE id = ?", (outcome.value, now, run_id)
    )
    hooks.run_ended(db, run_id, now=now)


def time_out_runs(db: sqlite3.Connection, *, now: float) -> list[TaskKey]:
    """Fail every unfinished run past its deadline (reason "timeout"), cancelling the tasks
    that have not started; running attempts are left for their workers to abort."""
    runs = db.execute(
        "SELECT id FROM runs WHERE finished_at IS NULL AND deadline <= ?", (now,)
    ).fetchall()
    changed: list[TaskKey] = []
    for (run_id,) in runs:
        db.execute(
            "UPDATE runs SET state = 'failed', reason = 'timeout', finished_at = ? WHERE id = ?",
            (now, run_id),
        )
        hooks.run_ended(db, run_id, now=now)
        changed.extend((run_id, tid) for tid in cancel_unstarted(db, run_id))
    return changed


def push_backoff(db: sqlite3.Connection, key: TaskKey, *, by: float) -> None:
    """Move a retrying task's end of backoff `by` seconds later: it was computed from the
    finisher's clock, and a later live clock must not see it cut (runner.store.liveness)."""
    db.execute(
        "UPDATE tasks SET not_before = not_before + ?, ready_at = ready_at + ?"
        " WHERE run_id = ? AND task_id = ? AND state = 'retrying'",
        (by, by, *key),
    )


def push_deadline(db: sqlite3.Connection, run_id: str, *, by: float) -> None:
    """Move the run's deadline `by` seconds later (the same reason as push_backoff)."""
    db.execute(
        "UPDATE runs SET deadline = deadline + ? WHERE id = ? AND deadline IS NOT NULL",
        (by, run_id),
    )
