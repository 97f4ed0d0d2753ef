"""Claiming on the SQLite store: the worker's assignments first, then the shared queue, highest
priority first, FIFO within a priority (inside the caller's transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from runner import transitions
from runner.failpoints import Failpoints
from runner.models import Lease, RunContext, TaskSpec
from runner.store.sqlite import cluster, flow, groups, rows, workers

CLAIMABLE = (
    "SELECT t.run_id, t.task_id, t.selector, r.parallelism, t.locks, t.assigned_to, r.dispatch,"
    " t.attempts, t.spec, r.cgroup, r.cgroup_seq"
    " FROM tasks t INDEXED BY tasks_queue CROSS JOIN runs r ON r.id = t.run_id"
    " WHERE t.ready_seq IS NOT NULL AND t.not_before <= ? AND r.finished_at IS NULL"
    " ORDER BY t.priority DESC, t.ready_seq"
)
# With spec.aging (docs/WORKFLOW.md, "Fairness"): the same rows by effective priority,
# priority + by * floor(waited / every). Only used while a live run ages: it sorts the whole
# queue (O(queue) per claim) where CLAIMABLE walks the index and stops at the first fits.
AGED = CLAIMABLE.replace(
    "ORDER BY t.priority DESC",
    "ORDER BY t.priority + iif(r.aging_every IS NULL, 0,"
    " r.aging_by * CAST((? - t.ready_at) / r.aging_every AS INTEGER)) DESC",
)
# A worker's assignments come first; the partial index is empty unless a dispatcher assigns.
# The dispatcher matched the selector already; 'pull' marks the rows as not reserved.
ASSIGNED = (
    "SELECT t.run_id, t.task_id, NULL, r.parallelism, t.locks, NULL, 'pull', t.attempts, t.spec,"
    " r.cgroup, r.cgroup_seq"
    " FROM tasks t INDEXED BY tasks_assigned CROSS JOIN runs r ON r.id = t.run_id"
    " WHERE t.assigned_to = ? AND t.ready_seq IS NOT NULL AND t.not_before <= ?"
    " AND r.finished_at IS NULL ORDER BY t.priority DESC, t.ready_seq"
)

# (run_id, task_id, locks JSON, attempts so far, spec JSON)
Picked = tuple[str, str, str | None, int, str]
# A row of CLAIMABLE or ASSIGNED: (run_id, task_id, selector, parallelism, locks, assigned_to,
# dispatch, attempts, spec, concurrency group, place in the group's line)
Row = tuple[
    str,
    str,
    str | None,
    int | None,
    str | None,
    str | None,
    str | None,
    int,
    str,
    str | None,
    int | None,
]


def claim(
    db: sqlite3.Connection,
    worker_id: str,
    *,
    now: float,
    limit: int,
    labels: Mapping[str, str] | None,
    failpoints: Failpoints,
) -> list[Opened]:
    """Open attempts on up to `limit` ready tasks for the worker (none when it drains);
    WorkerLeaseLost when its lease has expired."""
    if workers.check_worker(db, worker_id, now=now):
        return []
    return claim_in(db, worker_id, now=now, limit=limit, labels=labels, failpoints=failpoints)


def claim_in(
    db: sqlite3.Connection,
    worker_id: str,
    *,
    now: float,
    limit: int,
    labels: Mapping[str, str] | None,
    failpoints: Failpoints,
) -> list[Opened]:
    """Open attempts on up to `limit` ready tasks (the caller checked the worker's lease)."""
    picked = pick(db, worker_id, now=now, limit=limit, labels=labels)
    opened = open_attempts(db, worker_id, picked, now=now)
    if opened:
        failpoints.hit("claim.before_commit")
    return opened


def leases(opened: list[Opened], failpoints: Failpoints) -> list[Lease]:
    """The leases of attempts opened by a transaction that has committed."""
    if opened:
        failpoints.hit("claim.after_commit")
    return [o.lease() for o in opened]


class Picker:
    """Admits queue rows for one claim: selector, parallelism, reservation and locks."""

    def __init__(
        self, db: sqlite3.Connection, labels: Mapping[str, str] | None, *, now: float
    ) -> None:
        self.db = db
        self.labels = labels
        self.mode = cluster.mode(db, now=now)
        self.held = cluster.Held(db)
        self.running: dict[str, int] = {}
        self.picked: list[Picked] = []
        self.blocked: dict[str, bool] = {}  # run -> held back by its concurrency group

    def offer(self, row: Row) -> None:
        run_id, task_id, selector, parallelism, locks, assigned, run_dispatch, tries, spec = row[:9]
        if assigned is not None or cluster.reserved(run_dispatch, self.mode):
            return
        if row[9] is not None and self._behind(run_id, row[9], row[10]):
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

    def _behind(self, run_id: str, group: str, seq: int | None) -> bool:
        if run_id not in self.blocked:
            self.blocked[run_id] = groups.blocked(self.db, group, seq)
        return self.blocked[run_id]

    def _room(self, run_id: str, parallelism: int) -> bool:
        if run_id not in self.running:
            (running,) = self.db.execute(
                "SELECT count(*) FROM tasks WHERE run_id = ? AND state = 'running'", (run_id,)
            ).fetchone()
            self.running[run_id] = running
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
    picker = Picker(db, labels, now=now)
    shared = (AGED, (now, now)) if _aging(db) else (CLAIMABLE, (now,))
    for query, args in ((ASSIGNED, (worker_id, now)), shared):
        for row in db.execute(query, args):
            if len(picker.picked) >= limit:
                return picker.picked
            picker.offer(row)
    return picker.picked


def _aging(db: sqlite3.Connection) -> bool:
    """Whether a live run ages its priorities (the partial index `runs_aging`: no scan)."""
    return (
        db.execute(
            "SELECT 1 FROM runs INDEXED BY runs_aging WHERE aging_every IS NOT NULL"
            " AND finished_at IS NULL LIMIT 1"
        ).fetchone()
        is not None
    )


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
        spec = self.spec or TaskSpec.from_dict(rows.parse(self.spec_json))
        return Lease(
            run_id=self.run_id,
            task_id=self.task_id,
            attempt=self.attempt,
            token=self.token,
            worker_id=self.worker_id,
            spec=spec,
            context=self.context,
        )


def open_attempts(
    db: sqlite3.Connection, worker_id: str, picked: list[Picked], *, now: float
) -> list[Opened]:
    """Make the picked tasks running under new attempts and fencing tokens."""
    if not picked:
        return []
    first = flow.next_seq(db, len(picked))
    _open(
        db,
        worker_id,
        [(tries + 1, first + i, (r, t)) for i, (r, t, _, tries, _) in enumerate(picked)],
        now=now,
    )
    runs: dict[str, RunContext] = {}
    opened = []
    for token, (run_id, task_id, locks, tries, spec_json) in enumerate(picked, start=first):
        attempt = tries + 1
        if locks:
            cluster.acquire(db, locks, (run_id, task_id), attempt, token=token, worker_id=worker_id)
        if run_id not in runs:
            runs[run_id] = _start_run(db, run_id, now=now)
        spec, context = None, runs[run_id]
        if "${{" in spec_json:  # templates: maybe upstream outputs to read now
            spec = TaskSpec.from_dict(rows.parse(spec_json))
            context = _with_outputs(db, context, transitions.output_refs(spec))
        opened.append(Opened(run_id, task_id, attempt, token, worker_id, spec_json, spec, context))
    return opened


def _open(
    db: sqlite3.Connection,
    worker_id: str,
    attempts: list[tuple[int, int, tuple[str, str]]],
    *,
    now: float,
) -> None:
    """The picked tasks (read by `pick` in this transaction), given as (attempt, token, key),
    become running with new attempts owned by the worker: three statement calls for the whole
    claim (`executemany`), not three per task; each call costs Python a few microseconds under
    the GIL that the slot threads wait for. No RETURNING: one step per row."""
    db.executemany(
        "UPDATE tasks SET state = 'running', ready_seq = NULL, assigned_to = NULL,"
        " attempts = ? WHERE run_id = ? AND task_id = ?",
        [(attempt, *key) for attempt, _, key in attempts],
    )
    db.executemany(
        "INSERT INTO ownership (token, run_id, task_id, attempt, worker_id) VALUES (?,?,?,?,?)",
        [(token, *key, attempt, worker_id) for attempt, token, key in attempts],
    )
    db.executemany(
        "INSERT INTO attempts (run_id, task_id, number, state, worker, token, started_at)"
        " VALUES (?, ?, ?, 'running', ?, ?, ?)",
        [(*key, attempt, worker_id, token, now) for attempt, token, key in attempts],
    )


def _start_run(db: sqlite3.Connection, run_id: str, *, now: float) -> RunContext:
    """Mark the run running at its first claim (one statement); its template context."""
    params, scheduled = db.execute(
        "UPDATE runs SET state = iif(state = 'pending', 'running', state),"
        " started_at = iif(state = 'pending', ?, started_at) WHERE id = ?"
        " RETURNING params, scheduled_time",
        (now, run_id),
    ).fetchone()
    return RunContext(run_id=run_id, scheduled_time=scheduled, params=rows.parse(params))


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
    outputs = {tid: rows.loads(out) for tid, out in found}
    return RunContext(
        run_id=ctx.run_id, scheduled_time=ctx.scheduled_time, params=ctx.params, outputs=outputs
    )
