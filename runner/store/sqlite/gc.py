"""Garbage collection of finished runs on the SQLite store (see Store.gc).

Runs are deleted in batches of `BATCH`, one `BEGIN IMMEDIATE` transaction per batch, so the
write lock is held briefly and a large backlog does not stall workers; each run vanishes with
all its rows in one transaction. Freed pages are reused by SQLite (the file does not shrink;
`VACUUM` it offline to give the space back to the file system).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from runner.models import TERMINAL_TASK_STATES, RunState

BATCH = 100  # runs per transaction

# Every table holding rows of a run, keyed by its `run_id` column (`runs` itself is last).
RUN_TABLES = ("deps", "attempts", "logs", "ownership", "holds", "tasks", "hooks")

_TERMINAL_RUNS = tuple(s.value for s in RunState if s.terminal)
_TERMINAL_TASKS = tuple(s.value for s in TERMINAL_TASK_STATES)


def _marks(n: int) -> str:
    return ",".join("?" * n)


_EXPIRED = (
    f"SELECT r.id FROM runs r WHERE r.state IN ({_marks(len(_TERMINAL_RUNS))})"
    " AND r.finished_at IS NOT NULL AND r.finished_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id"
    f" AND t.state NOT IN ({_marks(len(_TERMINAL_TASKS))}))"
    " ORDER BY r.finished_at, r.id LIMIT ?"
)


def expired(db: sqlite3.Connection, *, cutoff: float, limit: int) -> list[str]:
    """Up to `limit` ids of finished runs (every task terminal) that ended before `cutoff`,
    oldest first."""
    args = (*_TERMINAL_RUNS, cutoff, *_TERMINAL_TASKS, limit)
    return [r for (r,) in db.execute(_EXPIRED, args)]


def delete_runs(db: sqlite3.Connection, run_ids: list[str]) -> None:
    """Delete the runs and every row of theirs, inside the caller's transaction."""
    marks = _marks(len(run_ids))
    for table in RUN_TABLES:
        db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", run_ids)
    db.execute(f"DELETE FROM runs WHERE id IN ({marks})", run_ids)


def gc(
    tx: Callable[[], AbstractContextManager[sqlite3.Connection]],
    *,
    older_than: float,
    now: float,
    dry_run: bool = False,
) -> list[str]:
    """See Store.gc: `tx()` opens one write transaction of the store."""
    cutoff = now - older_than
    if dry_run:
        with tx() as db:
            return expired(db, cutoff=cutoff, limit=-1)
    deleted: list[str] = []
    while True:
        with tx() as db:
            batch = expired(db, cutoff=cutoff, limit=BATCH)
            if batch:
                delete_runs(db, batch)
        deleted.extend(batch)
        if len(batch) < BATCH:
            return deleted
