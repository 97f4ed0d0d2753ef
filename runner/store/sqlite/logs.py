"""Attempt logs on the SQLite store: the last `log_limit` bytes of each attempt, in `logs`."""

from __future__ import annotations

import sqlite3

from runner import errors
from runner.models import Lease


def append_log(db: sqlite3.Connection, lease: Lease, text: str, *, limit: int) -> None:
    """Append to the attempt's log while the lease holds (LeaseLost when stale)."""
    check_owner(db, lease)
    append(db, (lease.run_id, lease.task_id, lease.attempt), text, limit=limit)


def check_owner(db: sqlite3.Connection, lease: Lease) -> None:
    """LeaseLost unless the ownership record still carries the lease's token (for writes
    during the attempt; a finish releases the record instead: `finish.release_owner`)."""
    row = db.execute(
        "SELECT o.run_id, o.task_id, o.attempt, o.worker_id, w.expires_at"
        " FROM ownership o LEFT JOIN workers w ON w.id = o.worker_id WHERE o.token = ?",
        (lease.token,),
    ).fetchone()
    if row is not None:
        run_id, task_id, attempt, worker_id, expires_at = row
        mine = (lease.run_id, lease.task_id, lease.attempt, lease.worker_id)
        if expires_at is not None and (run_id, task_id, attempt, worker_id) == mine:
            return
    raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)


def get_log(db: sqlite3.Connection, run_id: str, task_id: str, attempt: int | None) -> str:
    """The stored log of one attempt (the latest by default), "" if none."""
    row = db.execute(
        "SELECT attempts FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)
    ).fetchone()
    if row is None:
        if not db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            raise errors.RunNotFound(run_id)
        raise errors.TaskNotFound(run_id, task_id)
    (latest,) = row
    number = latest if attempt is None else attempt
    found = db.execute(
        "SELECT text FROM logs WHERE run_id = ? AND task_id = ? AND number = ?",
        (run_id, task_id, number),
    ).fetchone()
    if found is None:
        return ""
    (text,) = found
    return str(text)


def append(db: sqlite3.Connection, key: tuple[str, str, int], text: str, *, limit: int) -> None:
    """Append to an attempt's log, keeping its last `limit` bytes (cut at a character)."""
    data = text.encode(errors="replace")
    if len(data) < limit:
        row = db.execute(
            "SELECT text FROM logs WHERE run_id = ? AND task_id = ? AND number = ?", key
        ).fetchone()
        if row is not None:
            (before,) = row
            data = before.encode() + data
    if len(data) > limit:
        # A cut may split a character: drop its leading continuation bytes.
        kept = data[len(data) - limit :].decode("utf-8", errors="ignore")
    else:
        kept = data.decode()
    db.execute(
        "INSERT OR REPLACE INTO logs (run_id, task_id, number, text) VALUES (?, ?, ?, ?)",
        (*key, kept),
    )
