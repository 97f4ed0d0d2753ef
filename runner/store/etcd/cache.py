"""The etcd store's cache entries of cached tasks (see runner.store.base.Store, "cache").

Keys, under the store prefix: `cache/{key}`: the entry as JSON (`CacheRec`). Entries outlive
the runs that wrote them; `gc_cache` removes old ones in batches of `BATCH` deletes per
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from runner.models import CacheEntry
from runner.store.etcd import client as c
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import dumps, loads

BATCH = 100  # deletes per transaction (etcd allows 128 operations per transaction)


class CacheRec(TypedDict):
    key: str
    workflow: str
    task: str
    run_id: str
    outputs: dict[str, str]
    created_at: float


def _entry(raw: bytes) -> CacheEntry:
    rec: CacheRec = loads(raw)
    return CacheEntry(
        key=rec["key"],
        workflow=rec["workflow"],
        task=rec["task"],
        run_id=rec["run_id"],
        outputs=dict(rec["outputs"]),
        created_at=float(rec["created_at"]),
    )


def put_cache(client: c.Client, keys: Keys, entry: CacheEntry) -> None:
    """See Store.put_cache."""
    rec: CacheRec = {
        "key": entry.key,
        "workflow": entry.workflow,
        "task": entry.task,
        "run_id": entry.run_id,
        "outputs": dict(entry.outputs),
        "created_at": entry.created_at,
    }
    client.txn([], [c.put(keys.cache(entry.key), dumps(rec))], f"cache {entry.key[:12]}")


def get_cache(client: c.Client, keys: Keys, key: str) -> CacheEntry | None:
    """See Store.get_cache."""
    item = client.get(keys.cache(key))
    return None if item is None else _entry(item.value)


def list_cache(client: c.Client, keys: Keys, *, workflow: str | None = None) -> list[CacheEntry]:
    """See Store.list_cache."""
    entries = [_entry(i.value) for i in client.scan(keys.cache())]
    if workflow is not None:
        entries = [e for e in entries if e.workflow == workflow]
    return sorted(entries, key=lambda e: (e.created_at, e.key))


def delete_cache(client: c.Client, keys: Keys, cache_keys: Sequence[str]) -> list[str]:
    """See Store.delete_cache."""
    found, _ = client.read_many(keys.cache(k) for k in cache_keys)
    deleted = [k for k in cache_keys if keys.cache(k) in found]
    _delete(client, keys, deleted)
    return deleted


def gc_cache(
    client: c.Client, keys: Keys, *, older_than: float, now: float, dry_run: bool = False
) -> list[str]:
    """See Store.gc_cache."""
    cutoff = now - older_than
    old = [e.key for e in list_cache(client, keys) if e.created_at < cutoff]
    if not dry_run:
        _delete(client, keys, old)
    return old


def _delete(client: c.Client, keys: Keys, cache_keys: Sequence[str]) -> None:
    for i in range(0, len(cache_keys), BATCH):
        ops = [c.delete(keys.cache(k)) for k in cache_keys[i : i + BATCH]]
        client.txn([], ops, "delete cache entries")
