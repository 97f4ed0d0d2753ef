"""The SQLite store's cache entries of cached tasks (see runner.store.base.Store, "cache").

One row of `cache` per cache key: the outputs of the success it records, where they came
from and when. Entries outlive the runs that wrote them; `gc_cache` removes old ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from runner.models import CacheEntry

_COLUMNS = "key, workflow, task, run_id, outputs, created_at"


def _entry(row: tuple[str, str, str, str, str, float]) -> CacheEntry:
    key, workflow, task, run_id, outputs, created_at = row
    return CacheEntry(
        key=key,
        workflow=workflow,
        task=task,
        run_id=run_id,
        outputs=json.loads(outputs),
        created_at=created_at,
    )


def put_cache(db: sqlite3.Connection, entry: CacheEntry) -> None:
    """See Store.put_cache."""
    db.execute(
        f"INSERT OR REPLACE INTO cache ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (
            entry.key,
            entry.workflow,
            entry.task,
            entry.run_id,
            json.dumps(entry.outputs, sort_keys=True),
            entry.created_at,
        ),
    )


def get_cache(db: sqlite3.Connection, key: str) -> CacheEntry | None:
    """See Store.get_cache."""
    row = db.execute(f"SELECT {_COLUMNS} FROM cache WHERE key = ?", (key,)).fetchone()
    return None if row is None else _entry(row)


def list_cache(db: sqlite3.Connection, *, workflow: str | None = None) -> list[CacheEntry]:
    """See Store.list_cache."""
    where, args = ("WHERE workflow = ?", (workflow,)) if workflow is not None else ("", ())
    query = f"SELECT {_COLUMNS} FROM cache {where} ORDER BY created_at, key"
    return [_entry(row) for row in db.execute(query, args)]


def delete_cache(db: sqlite3.Connection, keys: Sequence[str]) -> list[str]:
    """See Store.delete_cache."""
    deleted = []
    for key in keys:
        if db.execute("DELETE FROM cache WHERE key = ?", (key,)).rowcount:
            deleted.append(key)
    return deleted


def gc_cache(
    db: sqlite3.Connection, *, older_than: float, now: float, dry_run: bool = False
) -> list[str]:
    """See Store.gc_cache."""
    cutoff = now - older_than
    found = [
        k
        for (k,) in db.execute(
            "SELECT key FROM cache WHERE created_at < ? ORDER BY created_at, key", (cutoff,)
        )
    ]
    if not dry_run:
        db.execute("DELETE FROM cache WHERE created_at < ?", (cutoff,))
    return found
