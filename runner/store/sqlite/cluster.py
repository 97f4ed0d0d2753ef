"""The SQLite store's cluster state: assignments, locks, drains and the dispatch default.

Assignments are `tasks.assigned_to` (the task stays queued: `ready_seq` set); locks a task
takes are `tasks.locks` (JSON list of [name, limit], NULL for most tasks) and the held ones are
rows of `holds`, one per (lock, fencing token), deleted with the ownership record; a drain is
`workers.draining`; the dispatch default is the single row of `dispatch_default`, in force
while its owner holds the scheduler leadership (`cron_leader`). Functions run inside the
caller's transaction. The tables are in `schema.CLUSTER_DDL`.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence

from runner import dispatch
from runner.models import (
    DispatchView,
    LockHolder,
    LockInfo,
    ReadyTask,
    TaskKey,
    TaskSpec,
)
from runner.store.sqlite import workers

Mode = tuple[bool, str]  # (a scheduler leads, its default strategy)


def locks_json(spec: TaskSpec) -> str | None:
    """The `tasks.locks` value of a task: NULL when it takes no lock."""
    locks = dispatch.task_locks(spec)
    return json.dumps(locks) if locks else None


def parse_locks(text: str | None) -> list[dispatch.LockSpec]:
    return [] if not text else [(str(n), int(lim)) for n, lim in json.loads(text)]


def mode(db: sqlite3.Connection, *, now: float) -> Mode:
    """Whether a scheduler leads, and the default strategy it dispatches with."""
    row = db.execute(
        "SELECT l.expires_at > ?, d.owner = l.owner, d.strategy FROM cron_leader l"
        " LEFT JOIN dispatch_default d ON d.id = 1 WHERE l.id = 1",
        (now,),
    ).fetchone()
    if row is None:
        return (False, dispatch.PULL)
    leading, owns_default, strategy = row
    if not leading:
        return (False, dispatch.PULL)
    return (True, str(strategy) if owns_default else dispatch.PULL)


def reserved(run_dispatch: str | None, current: Mode) -> bool:
    """A task left for the leading scheduler to assign (not claimable from the shared queue).
    Without a leading scheduler every task is pulled, so work never stalls."""
    leading, default = current
    return leading and (run_dispatch or default) != dispatch.PULL


class Held:
    """Holders per lock name, read once per lock in a transaction, plus this claim's takes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.counts: Counter[str] = Counter()
        self._read: set[str] = set()

    def free(self, locks: Sequence[dispatch.LockSpec]) -> bool:
        for name, _ in locks:
            if name not in self._read:
                (holders,) = self._db.execute(
                    "SELECT count(*) FROM holds WHERE name = ?", (name,)
                ).fetchone()
                self.counts[name] += int(holders)
                self._read.add(name)
        return dispatch.locks_free(locks, self.counts)

    def take(self, locks: Sequence[dispatch.LockSpec]) -> None:
        for name, _ in locks:
            self.counts[name] += 1


def acquire(
    db: sqlite3.Connection,
    locks_text: str | None,
    key: TaskKey,
    attempt: int,
    *,
    token: int,
    worker_id: str,
) -> None:
    """Record the claimed attempt as holder of its task's locks."""
    db.executemany(
        "INSERT INTO holds (name, token, lim, run_id, task_id, attempt, worker_id)"
        " VALUES (?,?,?,?,?,?,?)",
        [(n, token, lim, *key, attempt, worker_id) for n, lim in parse_locks(locks_text)],
    )


def release(db: sqlite3.Connection, token: int) -> None:
    """The attempt of `token` ended (finished or lost): its locks are free."""
    db.execute("DELETE FROM holds WHERE token = ?", (token,))


# ---------------------------------------------------------------------- dispatch


def set_dispatch(db: sqlite3.Connection, candidate: str, strategy: str) -> None:
    """`candidate` (the leading scheduler) sets the default strategy."""
    db.execute(
        "INSERT OR REPLACE INTO dispatch_default (id, owner, strategy) VALUES (1, ?, ?)",
        (candidate, strategy),
    )


_VIEW_TASKS = (
    "SELECT t.run_id, t.task_id, t.priority, t.selector, t.locks, r.dispatch"
    " FROM tasks t INDEXED BY tasks_queue CROSS JOIN runs r ON r.id = t.run_id"
    " WHERE t.ready_seq IS NOT NULL AND t.not_before <= ? AND r.finished_at IS NULL"
    " AND t.assigned_to IS NULL ORDER BY t.priority DESC, t.ready_seq"
)


def dispatch_view(db: sqlite3.Connection, *, now: float, default: str, limit: int) -> DispatchView:
    """Live workers with their true load, and up to `limit` ready unassigned tasks whose
    strategy is not pull and whose locks have room."""
    if (
        default == dispatch.PULL
        and not db.execute(
            "SELECT 1 FROM runs WHERE finished_at IS NULL AND dispatch IS NOT NULL"
            " AND dispatch != 'pull' LIMIT 1"
        ).fetchone()
    ):
        return DispatchView()  # nothing to dispatch: no walk of the queue
    held = Held(db)
    tasks: list[ReadyTask] = []
    for run_id, task_id, priority, selector, locks, run_dispatch in db.execute(_VIEW_TASKS, (now,)):
        if (run_dispatch or default) == dispatch.PULL:
            continue
        if locks and not held.free(parse_locks(locks)):
            continue
        tasks.append(
            ReadyTask(
                run_id=run_id,
                task_id=task_id,
                priority=priority,
                selector=json.loads(selector) if selector else {},
                dispatch=run_dispatch,
            )
        )
        if len(tasks) >= limit:
            break
    return DispatchView(workers=tuple(workers.live_workers(db, now=now)), tasks=tuple(tasks))


def assign(
    db: sqlite3.Connection, assignments: Iterable[tuple[TaskKey, str]], *, now: float
) -> list[TaskKey]:
    """Assign each still queued, unassigned task to its worker if that worker is live and not
    draining; the keys assigned."""
    ok: dict[str, bool] = {}
    done: list[TaskKey] = []
    for key, worker_id in assignments:
        if worker_id not in ok:
            row = db.execute(
                "SELECT 1 FROM workers WHERE id = ? AND draining = 0", (worker_id,)
            ).fetchone()
            ok[worker_id] = row is not None
        if (
            ok[worker_id]
            and db.execute(
                "UPDATE tasks SET assigned_to = ? WHERE run_id = ? AND task_id = ?"
                " AND ready_seq IS NOT NULL AND assigned_to IS NULL RETURNING 1",
                (worker_id, *key),
            ).fetchone()
        ):
            done.append(key)
    return done


def drain_worker(db: sqlite3.Connection, name: str, *, now: float) -> list[str]:
    """Mark the live workers named `name` (or with that id) draining; their ids."""
    ids = [
        worker_id
        for (worker_id,) in db.execute(
            "UPDATE workers SET draining = 1 WHERE (name = ? OR id = ?) RETURNING id",
            (name, name),
        ).fetchall()
    ]
    for worker_id in ids:
        workers.unassign_worker(db, worker_id)
    return sorted(ids)


# ---------------------------------------------------------------------- locks view


def list_locks(db: sqlite3.Connection) -> list[LockInfo]:
    """Every lock with holders or queued waiters, by name."""
    holders: dict[str, list[LockHolder]] = {}
    limits: dict[str, int] = {}
    for name, lim, run_id, task_id, attempt, worker_id in db.execute(
        "SELECT name, lim, run_id, task_id, attempt, worker_id FROM holds ORDER BY name, token"
    ):
        holders.setdefault(name, []).append(
            LockHolder(run_id=run_id, task_id=task_id, attempt=attempt, worker_id=worker_id)
        )
        limits.setdefault(name, lim)
    waiters: dict[str, list[TaskKey]] = {}
    for run_id, task_id, locks in db.execute(
        "SELECT run_id, task_id, locks FROM tasks WHERE ready_seq IS NOT NULL"
        " AND locks IS NOT NULL ORDER BY priority DESC, ready_seq"
    ):
        for name, lim in parse_locks(locks):
            waiters.setdefault(name, []).append((run_id, task_id))
            limits.setdefault(name, lim)
    return [
        LockInfo(
            name=n,
            limit=limits[n],
            holders=tuple(holders.get(n, ())),
            waiters=tuple(waiters.get(n, ())),
        )
        for n in sorted(limits)
    ]
