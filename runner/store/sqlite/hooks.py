"""Run hooks on the SQLite store: the outbox of deliveries (inside the caller's transaction).

`create_run` writes one `hooks` row per `spec.hooks` entry with no state (armed). The
transaction that ends the run (`run_ended`: finish, cancel, timeout) marks the rows whose `on`
matches `due`, so a delivery is recorded exactly once per run end. Deliverers take a due row
under a lease with a fresh token (`claim`) and record the result with it (`finish`); a stale
token records nothing (docs/HOOKS.md, docs/ARCHITECTURE.md "Hooks").
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Collection

from runner import errors
from runner.models import HookDelivery, HookSpec, HookState, HookStatus, Plan, RunState
from runner.store.sqlite.db import named


def insert(db: sqlite3.Connection, run_id: str, plan: Plan) -> None:
    """One armed row per hook of the plan."""
    db.executemany(
        "INSERT INTO hooks (run_id, idx, spec, kind) VALUES (?, ?, ?, ?)",
        [(run_id, i, json.dumps(h.to_dict()), h.kind) for i, h in enumerate(plan.hooks)],
    )


def run_ended(db: sqlite3.Connection, run_id: str, *, now: float) -> None:
    """Record the deliveries due now that the run ended (its state and reason are written)."""
    state, reason, key = db.execute(
        "SELECT state, reason, key FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    _record(
        db,
        run_id,
        lambda h: h.fires(state=RunState(state), reason=reason, run_key=key),
        now=now,
    )


def ticks_missed(db: sqlite3.Connection, run_id: str, *, now: float) -> None:
    """Record the `missed_tick` deliveries of a schedule's latest run (`record_tick`)."""
    row = db.execute("SELECT key FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is not None:
        _record(db, run_id, lambda h: h.fires_on_missed(run_key=row[0]), now=now)


def _record(
    db: sqlite3.Connection, run_id: str, due: Callable[[HookSpec], bool], *, now: float
) -> None:
    hooks = db.execute("SELECT idx, spec FROM hooks WHERE run_id = ?", (run_id,)).fetchall()
    db.executemany(
        "UPDATE hooks SET state = 'due', end_ = end_ + 1, attempts = 0, last_error = NULL,"
        " due_at = ?, token = NULL, holder = NULL, expires_at = NULL"
        " WHERE run_id = ? AND idx = ?",
        [(now, run_id, i) for i, spec in hooks if due(HookSpec.from_dict(json.loads(spec)))],
    )


def statuses(db: sqlite3.Connection, run_id: str) -> tuple[HookStatus, ...]:
    """The run's recorded deliveries, by hook index."""
    found = named(
        db,
        "SELECT idx, spec, state, attempts, last_error, due_at FROM hooks"
        " WHERE run_id = ? AND state IS NOT NULL ORDER BY idx",
        (run_id,),
    ).fetchall()
    out = []
    for r in found:
        spec = HookSpec.from_dict(json.loads(r["spec"]))
        out.append(
            HookStatus(
                index=r["idx"],
                on=spec.on,
                state=HookState(r["state"]),
                attempts=r["attempts"],
                last_error=r["last_error"],
                due_at=r["due_at"] or 0.0,
                kind=spec.kind,
            )
        )
    return tuple(out)


_DUE = (
    "SELECT run_id, idx, spec, end_, attempts FROM hooks"
    " WHERE state IN ('due', 'delivering') AND due_at <= ?"
    " AND (expires_at IS NULL OR expires_at <= ?){more} ORDER BY due_at, run_id, idx LIMIT 1"
)


def _due(
    db: sqlite3.Connection, *, now: float, run_id: str | None, kinds: Collection[str] | None
) -> sqlite3.Row | None:
    more = ""
    args: tuple[object, ...] = (now, now)
    if run_id is not None:
        more, args = " AND run_id = ?", (*args, run_id)
    if kinds is not None:
        more += f" AND kind IN ({','.join('?' * len(kinds))})"
        args += tuple(kinds)
    found: sqlite3.Row | None = named(db, _DUE.format(more=more), args).fetchone()
    return found


def any_due(
    db: sqlite3.Connection, *, now: float, run_id: str | None, kinds: Collection[str] | None
) -> bool:
    """Whether `claim` would find something (a read, so idle deliverers take no write lock)."""
    return _due(db, now=now, run_id=run_id, kinds=kinds) is not None


def claim(
    db: sqlite3.Connection,
    deliverer: str,
    *,
    now: float,
    lease_for: float,
    run_id: str | None,
    kinds: Collection[str] | None,
) -> HookDelivery | None:
    """Take the oldest due delivery whose lease (if any) has lapsed, with a new token."""
    row = _due(db, now=now, run_id=run_id, kinds=kinds)
    if row is None:
        return None
    token = uuid.uuid4().hex
    db.execute(
        "UPDATE hooks SET state = 'delivering', attempts = attempts + 1, token = ?, holder = ?,"
        " expires_at = ? WHERE run_id = ? AND idx = ?",
        (token, deliverer, now + lease_for, row["run_id"], row["idx"]),
    )
    return HookDelivery(
        run_id=row["run_id"],
        index=row["idx"],
        end=row["end_"],
        spec=HookSpec.from_dict(json.loads(row["spec"])),
        token=token,
        attempt=row["attempts"] + 1,
        expires_at=now + lease_for,
    )


def finish(
    db: sqlite3.Connection,
    delivery: HookDelivery,
    *,
    now: float,
    error: str | None,
    retry_at: float | None,
) -> HookState:
    """Record how the claimed try went, fenced by its token; the delivery's new state."""
    if error is None:
        state, due_at = HookState.DELIVERED, None
    elif retry_at is not None:
        state, due_at = HookState.DUE, retry_at
    else:
        state, due_at = HookState.FAILED, None
    done = db.execute(
        "UPDATE hooks SET state = ?, last_error = ?, due_at = COALESCE(?, due_at), token = NULL,"
        " holder = NULL, expires_at = NULL WHERE run_id = ? AND idx = ? AND token = ?"
        " AND state = 'delivering'",
        (state.value, error, due_at, delivery.run_id, delivery.index, delivery.token),
    )
    if done.rowcount != 1:
        raise errors.LeaseLost(delivery.run_id, f"hooks[{delivery.index}]", delivery.attempt)
    return state
