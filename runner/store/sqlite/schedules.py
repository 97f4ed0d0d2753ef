"""Schedules and scheduler leadership on the SQLite store (see runner.store.base.Store).

Schedules are rows of `schedules` holding each entry as JSON; the leadership is the single row
of `cron_leader` (owner, expiry), taken in one `BEGIN IMMEDIATE` transaction when it is free,
expired or already ours. Expiry compares the caller's `now`, so the hosts' clocks must agree
(they are one host: the embedded store is one file). Functions run inside the caller's
transaction; the tables are in `schema.CRON_DDL`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from runner import errors
from runner.models import CronEntry
from runner.store.base import entry_from_dict, entry_to_dict, merge_schedule
from runner.store.sqlite import hooks


def put_schedule(db: sqlite3.Connection, entry: CronEntry, *, now: float) -> bool:
    """See Store.put_schedule."""
    merged = merge_schedule(read(db, entry.name), entry, now=now)
    if merged is None:
        return False
    write(db, merged)
    return True


def get_schedule(db: sqlite3.Connection, name: str) -> CronEntry:
    """See Store.get_schedule."""
    found = read(db, name)
    if found is None:
        raise errors.ScheduleNotFound(name)
    return found


def list_schedules(db: sqlite3.Connection) -> list[CronEntry]:
    """See Store.list_schedules."""
    found = db.execute("SELECT entry FROM schedules ORDER BY name").fetchall()
    return [entry_from_dict(json.loads(entry)) for (entry,) in found]


def delete_schedule(db: sqlite3.Connection, name: str) -> None:
    """See Store.delete_schedule."""
    if db.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 0:
        raise errors.ScheduleNotFound(name)


def suspend_schedule(
    db: sqlite3.Connection, name: str, *, suspended: bool, now: float
) -> CronEntry:
    """See Store.suspend_schedule."""
    found = get_schedule(db, name)
    last = found.last_tick if suspended else max(found.last_tick, now)
    changed = dataclasses.replace(found, suspended=suspended, last_tick=last)
    write(db, changed)
    return changed


def record_tick(
    db: sqlite3.Connection,
    name: str,
    *,
    tick: float,
    run_id: str | None,
    missed: int,
    skipped: int,
) -> bool:
    """See Store.record_tick."""
    found = read(db, name)
    if found is None or tick <= found.last_tick:
        return False
    write(
        db,
        dataclasses.replace(
            found,
            last_tick=tick,
            last_run_id=run_id or found.last_run_id,
            missed=found.missed + missed,
            skipped=found.skipped + skipped,
        ),
    )
    latest = run_id or found.last_run_id
    if missed and latest is not None:  # the outbox, in the same transaction (docs/HOOKS.md)
        hooks.ticks_missed(db, latest, now=tick)
    return True


def campaign(db: sqlite3.Connection, candidate: str, *, now: float, ttl: float) -> bool:
    """See Store.campaign: take the lock row when free, expired or ours."""
    row = db.execute("SELECT owner, expires_at FROM cron_leader WHERE id = 1").fetchone()
    if row is not None:
        owner, expires_at = row
        if owner != candidate and expires_at > now:
            return False
    db.execute(
        "INSERT OR REPLACE INTO cron_leader (id, owner, expires_at) VALUES (1, ?, ?)",
        (candidate, now + ttl),
    )
    return True


def resign(db: sqlite3.Connection, candidate: str) -> None:
    """See Store.resign."""
    db.execute("DELETE FROM cron_leader WHERE id = 1 AND owner = ?", (candidate,))


def leader(db: sqlite3.Connection, *, now: float) -> str | None:
    """See Store.leader."""
    row = db.execute(
        "SELECT owner FROM cron_leader WHERE id = 1 AND expires_at > ?", (now,)
    ).fetchone()
    if row is None:
        return None
    (owner,) = row
    return str(owner)


def read(db: sqlite3.Connection, name: str) -> CronEntry | None:
    """The schedule named `name`, or None."""
    row = db.execute("SELECT entry FROM schedules WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    (entry,) = row
    return entry_from_dict(json.loads(entry))


def write(db: sqlite3.Connection, entry: CronEntry) -> None:
    """Insert or replace the schedule row of `entry`."""
    db.execute(
        "INSERT OR REPLACE INTO schedules (name, entry) VALUES (?, ?)",
        (entry.name, json.dumps(entry_to_dict(entry), sort_keys=True)),
    )
