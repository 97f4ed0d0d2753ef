"""The SQLite store's cluster state: assignments, locks, drains and the dispatch default.

Assignments are `tasks.assigned_to` (the task stays queued: `ready_seq` set); locks a task
takes are `tasks.locks` (JSON list of [name, limit], NULL for most tasks) and the held ones are
rows of `holds`, one per (lock, fencing token), deleted with the ownership record; a drain is
`workers.draining`; the dispatch default is the single row of `dispatch_default`, in force
while its owner holds the scheduler leadership (`cron_leader`). Functions run inside the
caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

from runner import dispatch
from runner.models import (
    DispatchView,
    LockHolder,
    LockInfo,
    ReadyTask,
    TaskKey,
    TaskSpec,
    WorkerInfo,
)

# Columns added to tables of files created before the cluster features (table, column, decl).
COLUMNS = (
    ("runs", "dispatch", "TEXT"),
    ("tasks", "locks", "TEXT"),
    ("tasks", "assigned_to", "TEXT"),
    ("workers", "draining", "INTEGER NOT NULL DEFAULT 0"),
)

CLUSTER_DDL = """
CREATE INDEX IF NOT EXISTS tasks_assigned ON tasks (assigned_to, priority DESC, ready_seq)
    WHERE assigned_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS holds (
    name TEXT NOT NULL,
    token INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_token ON holds (token);
CREATE TABLE IF NOT EXISTS dispatch_default (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    strategy TEXT NOT NULL
);
"""

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
    if row is None or not row[0]:
        return (False, dispatch.PULL)
    return (True, str(row[2]) if row[1] else dispatch.PULL)


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
                (n,) = self._db.execute("SELECT count(*) FROM holds WHERE name = ?", (name,))
                self.counts[name] += int(n[0])
                self._read.add(name)
        return dispatch.locks_free(locks, self.counts)

    def take(self, locks: Sequence[dispatch.LockSpec]) -> None:
        for name, _ in locks:
            self.counts[name] += 1


def acquire(
    db: sqlite3.Connection, locks_text: str | None, key: TaskKey, attempt: int, *,
    token: int, worker_id: str,
) -> None:  # fmt: skip
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


def set_default(db: sqlite3.Connection, candidate: str, strategy: str) -> None:
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


def view(db: sqlite3.Connection, *, now: float, default: str, limit: int) -> DispatchView:
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
        tasks.append(ReadyTask(run_id=run_id, task_id=task_id, priority=priority,
                               selector=json.loads(selector) if selector else {},
                               dispatch=run_dispatch))  # fmt: skip
        if len(tasks) >= limit:
            break
    return DispatchView(workers=tuple(live_workers(db, now=now)), tasks=tuple(tasks))


def live_workers(db: sqlite3.Connection, *, now: float) -> list[WorkerInfo]:
    """Live workers by name, `running` counted from ownership, `assigned` from the queue."""
    found = db.execute(
        "SELECT w.id, w.name, w.host, w.pid, w.labels, w.weight, w.capacity, w.version,"
        " (SELECT count(*) FROM ownership o WHERE o.worker_id = w.id), w.heartbeat_at,"
        " w.expires_at, (SELECT count(*) FROM tasks t WHERE t.assigned_to = w.id"
        " AND t.ready_seq IS NOT NULL), w.draining FROM workers w WHERE w.expires_at > ?"
        " ORDER BY w.name, w.id",
        (now,),
    ).fetchall()
    return [
        WorkerInfo(
            id=r[0],
            name=r[1],
            host=r[2],
            pid=r[3],
            labels=json.loads(r[4]),
            weight=r[5],
            capacity=r[6],
            version=r[7],
            running=r[8],
            heartbeat_at=r[9],
            expires_at=r[10],
            assigned=r[11],
            draining=bool(r[12]),
        )
        for r in found
    ]


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
                "SELECT 1 FROM workers WHERE id = ? AND expires_at > ? AND draining = 0",
                (worker_id, now),
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


def unassign_worker(db: sqlite3.Connection, worker_id: str) -> None:
    """The worker died, drains or left: its assignments go back to the shared queue."""
    db.execute("UPDATE tasks SET assigned_to = NULL WHERE assigned_to = ?", (worker_id,))


def drain(db: sqlite3.Connection, name: str, *, now: float) -> list[str]:
    """Mark the live workers named `name` (or with that id) draining; their ids."""
    ids = [
        r[0]
        for r in db.execute(
            "UPDATE workers SET draining = 1 WHERE (name = ? OR id = ?) AND expires_at > ?"
            " RETURNING id",
            (name, name, now),
        ).fetchall()
    ]
    for worker_id in ids:
        unassign_worker(db, worker_id)
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


class SqliteClusterMixin:
    """Dispatch, drain and lock methods of `SqliteStore`, on its `_tx` transactions."""

    def _tx(self, *, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SqliteStore

    def dispatch_view(
        self, *, now: float, default: str = dispatch.PULL, limit: int = 1000
    ) -> DispatchView:
        """See Store.dispatch_view."""
        with self._tx(write=False) as db:
            return view(db, now=now, default=default, limit=limit)

    def assign(self, assignments: Sequence[tuple[TaskKey, str]], *, now: float) -> list[TaskKey]:
        """See Store.assign."""
        with self._tx() as db:
            return assign(db, assignments, now=now)

    def set_dispatch(self, candidate: str, strategy: str, *, now: float) -> None:
        """See Store.set_dispatch."""
        with self._tx() as db:
            set_default(db, candidate, strategy)

    def drain_worker(self, name: str, *, now: float) -> list[str]:
        """See Store.drain_worker."""
        with self._tx() as db:
            return drain(db, name, now=now)

    def list_locks(self, *, now: float) -> list[LockInfo]:
        """See Store.list_locks."""
        with self._tx(write=False) as db:
            return list_locks(db)
