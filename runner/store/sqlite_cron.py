"""The SQLite store's schedules and scheduler leadership (see runner.store.base.Store).

Schedules are rows of `schedules` holding each entry as JSON; the leadership is the single row
of `cron_leader` (owner, expiry), taken in one `BEGIN IMMEDIATE` transaction when it is free,
expired or already ours. Expiry compares the caller's `now`, so the hosts' clocks must agree
(they are one host: the embedded store is one file).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import AbstractContextManager

from runner import errors
from runner.models import CronEntry
from runner.store.base import entry_from_dict, entry_to_dict, merge_schedule

CRON_DDL = """
CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cron_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class SqliteCronMixin:
    """Schedule and leadership methods of `SqliteStore`, on its `_tx` transactions."""

    def _tx(self, *, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SqliteStore

    def put_schedule(self, entry: CronEntry, *, now: float) -> bool:
        """See Store.put_schedule."""
        with self._tx() as db:
            merged = merge_schedule(_read(db, entry.name), entry, now=now)
            if merged is None:
                return False
            _write(db, merged)
            return True

    def get_schedule(self, name: str) -> CronEntry:
        """See Store.get_schedule."""
        with self._tx(write=False) as db:
            found = _read(db, name)
        if found is None:
            raise errors.ScheduleNotFound(name)
        return found

    def list_schedules(self) -> list[CronEntry]:
        """See Store.list_schedules."""
        with self._tx(write=False) as db:
            rows = db.execute("SELECT entry FROM schedules ORDER BY name").fetchall()
        return [entry_from_dict(json.loads(r[0])) for r in rows]

    def delete_schedule(self, name: str) -> None:
        """See Store.delete_schedule."""
        with self._tx() as db:
            if db.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 0:
                raise errors.ScheduleNotFound(name)

    def suspend_schedule(self, name: str, *, suspended: bool, now: float) -> CronEntry:
        """See Store.suspend_schedule."""
        with self._tx() as db:
            found = _read(db, name)
            if found is None:
                raise errors.ScheduleNotFound(name)
            last = found.last_tick if suspended else max(found.last_tick, now)
            changed = dataclasses.replace(found, suspended=suspended, last_tick=last)
            _write(db, changed)
            return changed

    def record_tick(
        self,
        name: str,
        *,
        tick: float,
        run_id: str | None = None,
        missed: int = 0,
        skipped: int = 0,
    ) -> bool:
        """See Store.record_tick."""
        with self._tx() as db:
            found = _read(db, name)
            if found is None or tick <= found.last_tick:
                return False
            _write(
                db,
                dataclasses.replace(
                    found,
                    last_tick=tick,
                    last_run_id=run_id or found.last_run_id,
                    missed=found.missed + missed,
                    skipped=found.skipped + skipped,
                ),
            )
            return True

    def campaign(self, candidate: str, *, now: float, ttl: float) -> bool:
        """See Store.campaign: take the lock row when free, expired or ours."""
        with self._tx() as db:
            row = db.execute("SELECT owner, expires_at FROM cron_leader WHERE id = 1").fetchone()
            if row is not None and row[0] != candidate and row[1] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO cron_leader (id, owner, expires_at) VALUES (1, ?, ?)",
                (candidate, now + ttl),
            )
            return True

    def resign(self, candidate: str, *, now: float) -> None:
        """See Store.resign."""
        with self._tx() as db:
            db.execute("DELETE FROM cron_leader WHERE id = 1 AND owner = ?", (candidate,))

    def leader(self, *, now: float) -> str | None:
        """See Store.leader."""
        with self._tx(write=False) as db:
            row = db.execute(
                "SELECT owner FROM cron_leader WHERE id = 1 AND expires_at > ?", (now,)
            ).fetchone()
        return None if row is None else str(row[0])


def _read(db: sqlite3.Connection, name: str) -> CronEntry | None:
    row = db.execute("SELECT entry FROM schedules WHERE name = ?", (name,)).fetchone()
    return None if row is None else entry_from_dict(json.loads(row[0]))


def _write(db: sqlite3.Connection, entry: CronEntry) -> None:
    db.execute(
        "INSERT OR REPLACE INTO schedules (name, entry) VALUES (?, ?)",
        (entry.name, json.dumps(entry_to_dict(entry), sort_keys=True)),
    )
