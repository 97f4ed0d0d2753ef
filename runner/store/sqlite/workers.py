"""Workers on the SQLite store: their leases (rows of `workers`), heartbeats, and losing the
attempts of workers that left or died (inside the caller's transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable

from runner import errors
from runner.models import AttemptState, Heartbeat, Reason, TaskKey, TaskState, WorkerInfo
from runner.store.base import MAX_LOSSES
from runner.store.liveness import Beat
from runner.store.sqlite import flow, rows
from runner.store.sqlite.db import named


def register_worker(db: sqlite3.Connection, info: WorkerInfo, *, now: float, ttl: float) -> int:
    """Open the worker's lease for `ttl` seconds; its heartbeat counter. Attempts left from an
    expired earlier lease under the same id are lost first, so their stale tokens stay fenced
    off."""
    row = db.execute("SELECT expires_at, beats FROM workers WHERE id = ?", (info.id,)).fetchone()
    beats = 1
    if row is not None:
        expires_at, beats = row[0], row[1] + 1
        if expires_at <= now:
            lose_worker(db, info.id, now=now, counted=True)
    db.execute(
        "INSERT OR REPLACE INTO workers (id, name, host, pid, labels, weight, capacity,"
        " version, running, heartbeat_at, expires_at, beats) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            info.id,
            info.name,
            info.host,
            info.pid,
            json.dumps(info.labels),
            info.weight,
            info.capacity,
            info.version,
            info.running,
            now,
            now + ttl,
            beats,
        ),
    )
    return beats


def heartbeat(
    db: sqlite3.Connection,
    worker_id: str,
    *,
    now: float,
    ttl: float,
    running: int,
    skew: float | None = None,
) -> tuple[Heartbeat, int]:
    """Renew the worker's lease (and record `skew`, its clock's distance from the other
    workers'); the attempts it must abort, and its heartbeat counter. WorkerLeaseLost when its
    lease was swept."""
    check_worker(db, worker_id, now=now)
    (beats,) = db.execute(
        "UPDATE workers SET heartbeat_at = ?, expires_at = ?, running = ?, beats = beats + 1,"
        " clock_skew = ? WHERE id = ? RETURNING beats",
        (now, now + ttl, running, skew, worker_id),
    ).fetchone()
    abort = db.execute(
        "SELECT o.run_id, o.task_id FROM ownership o JOIN runs r ON r.id = o.run_id"
        " WHERE o.worker_id = ? AND r.finished_at IS NOT NULL",
        (worker_id,),
    ).fetchall()
    (draining,) = db.execute("SELECT draining FROM workers WHERE id = ?", (worker_id,)).fetchone()
    return Heartbeat(abort=frozenset((r, t) for r, t in abort), drain=bool(draining)), beats


def beats(db: sqlite3.Connection) -> list[Beat]:
    """Every worker row as the liveness observer reads it: (id, beats, heartbeat_at, ttl)."""
    return [
        (w, int(b), float(h), float(e - h))
        for w, b, h, e in db.execute("SELECT id, beats, heartbeat_at, expires_at FROM workers")
    ]


def live_workers(
    db: sqlite3.Connection, *, now: float, dead: Collection[str] = ()
) -> list[WorkerInfo]:
    """Live workers by name: every registered worker not yet swept, less those the caller's
    observer judges `dead`; `running` counted from ownership, `assigned` from the queue."""
    found = named(db, rows.WORKER_SELECT + " ORDER BY w.name, w.id", ())
    return [rows.worker(r) for r in found if r["id"] not in dead]


def worker_lease(db: sqlite3.Connection, worker_id: str) -> tuple[float, bool] | None:
    """The worker's lease: (expires_at, draining), or None when it has none."""
    row = db.execute(
        "SELECT expires_at, draining FROM workers WHERE id = ?", (worker_id,)
    ).fetchone()
    if row is None:
        return None
    expires_at, draining = row
    return float(expires_at), bool(draining)


def check_worker(db: sqlite3.Connection, worker_id: str, *, now: float) -> bool:
    """WorkerLeaseLost unless the worker's lease is alive (its row not swept: the store
    object's observer judges expiry, never `now` against another clock); True when it is
    draining."""
    row = db.execute("SELECT draining FROM workers WHERE id = ?", (worker_id,)).fetchone()
    if row is None:
        raise errors.WorkerLeaseLost(worker_id)
    return bool(row[0])


def sweep(db: sqlite3.Connection, *, now: float, dead: Iterable[str], due: float) -> list[TaskKey]:
    """Lose the attempts of the workers the caller's observer judged `dead` and time out runs
    whose deadline is before `due` (now by the earliest live clock)."""
    changed: list[TaskKey] = []
    for worker_id in dead:
        changed.extend(lose_worker(db, worker_id, now=now, counted=True))
    changed.extend(flow.time_out_runs(db, now=due))
    return changed


def lose_worker(
    db: sqlite3.Connection, worker_id: str, *, now: float, counted: bool
) -> list[TaskKey]:
    """Close the worker's lease: its attempts are lost (`counted` toward MAX_LOSSES or not)
    and its assignments go back to the shared queue."""
    tokens = db.execute(
        "SELECT token FROM ownership WHERE worker_id = ? ORDER BY token", (worker_id,)
    ).fetchall()
    lost = [lose_attempt(db, t, now=now, counted=counted) for (t,) in tokens]
    unassign_worker(db, worker_id)
    db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
    return [key for key in lost if key is not None]


def unassign_worker(db: sqlite3.Connection, worker_id: str) -> None:
    """The worker died, drains or left: its assignments go back to the shared queue."""
    db.execute("UPDATE tasks SET assigned_to = NULL WHERE assigned_to = ?", (worker_id,))


def lose_attempt(
    db: sqlite3.Connection, token: int, *, now: float, counted: bool
) -> TaskKey | None:
    """Record an owned attempt `lost` and return its task to the queue; the task fails on its
    MAX_LOSSES-th counted loss, and is cancelled when its run has already ended."""
    row = db.execute(
        "DELETE FROM ownership WHERE token = ? RETURNING run_id, task_id, attempt", (token,)
    ).fetchone()
    if row is None:
        return None
    run_id, task_id, attempt = row
    db.execute("DELETE FROM holds WHERE token = ?", (token,))  # a dead holder's locks are free
    db.execute(
        "UPDATE attempts SET state = ?, reason = ?, finished_at = ?"
        " WHERE run_id = ? AND task_id = ? AND number = ?",
        (AttemptState.LOST.value, Reason.LOST.value, now, run_id, task_id, attempt),
    )
    if flow.run_state(db, run_id).terminal:
        flow.set_terminal(db, run_id, [task_id], TaskState.CANCELLED)
        return (run_id, task_id)
    (losses,) = db.execute(
        "UPDATE tasks SET losses = losses + ? WHERE run_id = ? AND task_id = ? RETURNING losses",
        (int(counted), run_id, task_id),
    ).fetchone()
    if losses >= MAX_LOSSES:
        flow.complete_task(db, run_id, task_id, TaskState.FAILED, now=now)
    else:
        flow.enqueue(db, run_id, [task_id], now=now)
    return (run_id, task_id)
