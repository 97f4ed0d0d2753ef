"""Garbage collection of finished runs on etcd (see Store.gc), within etcd's limits.

Per run, one transaction compared on the run record's mod revision first deletes the run
record, its idempotency key (`runkey/`) and `active/`/`ending/` markers, and writes a
`gc/{run}` marker. From that commit on the run is gone for every reader (`get_run`,
`list_runs`, `get_log` read the run record first; claims skip queue entries whose run record
they cannot read), so a half-done gc never leaves a visible-but-broken run. Then the run's other
keys go in transactions of at most `CHUNK` deletes (etcd allows 128 operations per transaction),
and the marker last, with a final delete of each of the run's prefixes; a gc that stopped
midway is completed by the next one, which starts with the markers it finds.

Afterwards the key-value history is compacted up to the current revision minus
`KEEP_REVISIONS` (deleted keys otherwise stay in etcd's history, and its database, until
compaction). Watches that fall behind a compaction restart and re-read (`watch`); the
window keeps paged reads at a fixed revision, which take seconds at most, well clear of it.
Compaction frees space inside etcd's database for reuse; `etcdctl defrag` returns it to the
file system (an operator's choice: it blocks the member while it runs).

Run ids are assumed not to be reused while their gc is in progress (they end in a random
suffix; cron run ids name past ticks, which never fire again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from etcd3 import etcdrpc

from runner.models import RunState
from runner.store.etcd import client as c
from runner.store.etcd.keys import Keys, q
from runner.store.etcd.records import load_run

CHUNK = 100  # deletes per transaction, under etcd's default --max-txn-ops of 128
CHECKS_PER_READ = 30  # runs whose leftovers are counted per read transaction (4 ops each)
KEEP_REVISIONS = 100_000  # history kept behind the current revision when compacting
# Keys of a run that live under `{kind}/{run}/`.
RUN_KINDS: tuple[str, ...] = ("task", "done", "fail", "prop", "own", "log", "logmeta", "arr")
RUN_KINDS += (
    "cnt",
    "dcnt",
    "join",
    "gate",
    "aged",
    "hook",
    "hookdue",
)  # gate: if/forEach; aged: spec.aging
# Keys that end in `/{run}/{task}` under a prefix that does not start with the run.
SCATTERED_KINDS = ("queue", "assign", "held", "lock")


def gc(
    client: c.Client, keys: Keys, *, older_than: float, now: float, dry_run: bool = False
) -> list[str]:
    """See Store.gc. Returns the ids of the runs this call unlinked, oldest first."""
    expired = _expired(client, keys, cutoff=now - older_than)
    if dry_run:
        return [item_run_id for item_run_id, _ in expired]
    resumed = [keys.split(i.key, "gc")[0] for i in client.scan(_marker(keys, ""), keys_only=True)]
    deleted = [run_id for run_id, item in expired if unlink(client, keys, run_id, item)]
    if resumed or deleted:
        _purge(client, keys, list(dict.fromkeys(resumed + deleted)))
        _drop_floor(client, keys)
        compact(client)
    return deleted


def _drop_floor(client: c.Client, keys: Keys) -> None:
    """Delete the queue's floor when the queue is empty (compared in the same transaction): a
    missing floor reads as the queue's start (`head`), so a namespace whose runs were all
    collected holds no key."""
    queue = keys.queue()
    empty = c.none_in(queue, c.range_end(queue).decode())
    client.txn([empty], [c.delete(keys.floor())], "gc: floor")


def _marker(keys: Keys, run_id: str) -> str:
    return f"{keys.prefix}gc/{q(run_id)}"


def _run_prefix(keys: Keys, kind: str, run_id: str) -> str:
    return f"{keys.prefix}{kind}/{q(run_id)}/"


# ---------------------------------------------------------------------- what to delete


def _expired(client: c.Client, keys: Keys, *, cutoff: float) -> list[tuple[str, c.Item]]:
    """The finished runs that ended before `cutoff` and have every task terminal (as many
    `done/` markers as tasks, no ownership, propagation or ending marker left), oldest first."""
    found = []
    for item in client.scan(keys.runs()):
        run = load_run(item.value)
        finished = run.get("finished_at")
        if RunState(run["state"]).terminal and finished is not None and finished < cutoff:
            found.append((float(finished), str(run["id"]), int(run["tasks_total"]), item))
    found.sort(key=lambda f: (f[0], f[1]))
    out: list[tuple[str, c.Item]] = []
    for start in range(0, len(found), CHECKS_PER_READ):
        part = found[start : start + CHECKS_PER_READ]
        ops = [op for _, run_id, _, _ in part for op in _settled_ops(keys, run_id)]
        responses, _ = client.reads(ops, "gc: check runs")
        for i, (_, run_id, total, item) in enumerate(part):
            done, owned, props, ending = (r.response_range for r in responses[4 * i : 4 * i + 4])
            if done.count == total and not owned.count and not props.count and not ending.kvs:
                out.append((run_id, item))
    return out


def _settled_ops(keys: Keys, run_id: str) -> list[c.Op]:
    return [
        c.count(keys.done(run_id, "")),
        c.count(keys.own(run_id, "")),
        c.count(keys.prop(run_id, "")),
        c.get(keys.ending(run_id)),
    ]


# ---------------------------------------------------------------------- deleting


def unlink(client: c.Client, keys: Keys, run_id: str, item: c.Item) -> bool:
    """Make the run disappear in one transaction, unless it changed since it was read (a
    retry, say); True when it did."""
    compares = [c.mod_is(item.key, item.mod)]
    ops = [
        c.delete(item.key),
        c.delete(keys.active(run_id)),
        c.delete(keys.ending(run_id)),
        c.put(_marker(keys, run_id), b"1"),
    ]
    if group := load_run(item.value).get("group"):
        ops.append(c.delete(keys.group(group, run_id)))
    key = load_run(item.value).get("key")
    owned_key = None if key is None else client.get(keys.run_key(key))
    if owned_key is not None and owned_key.value.decode() == run_id:
        compares.append(c.mod_is(owned_key.key, owned_key.mod))
        ops.append(c.delete(owned_key.key))
    return client.txn(compares, ops, "gc: unlink run").succeeded


def _purge(client: c.Client, keys: Keys, run_ids: Sequence[str]) -> None:
    """Delete every remaining key of the unlinked runs, then their gc markers."""
    wanted = {q(r) for r in run_ids}
    for kind in SCATTERED_KINDS:
        scanned = client.scan(f"{keys.prefix}{kind}/", keys_only=True)
        _delete_keys(client, (i.key for i in scanned if i.key.rsplit("/", 2)[-2] in wanted))
    for run_id in run_ids:
        for kind in RUN_KINDS:
            prefix = _run_prefix(keys, kind, run_id)
            _delete_keys(client, (i.key for i in client.scan(prefix, keys_only=True)))
        last = [c.delete_prefix(_run_prefix(keys, kind, run_id)) for kind in RUN_KINDS]
        client.txn([], [*last, c.delete(_marker(keys, run_id))], "gc: end")


def _delete_keys(client: c.Client, found: Iterable[str]) -> None:
    """Delete the keys, at most CHUNK per transaction."""
    batch: list[str] = []
    for key in found:
        batch.append(key)
        if len(batch) == CHUNK:
            client.txn([], [c.delete(k) for k in batch], "gc: delete keys")
            batch = []
    if batch:
        client.txn([], [c.delete(k) for k in batch], "gc: delete keys")


def compact(client: c.Client, *, keep: int = KEEP_REVISIONS) -> int:
    """Compact etcd's history up to the current revision minus `keep`; the revision compacted
    to (0 when there is too little history)."""
    target = client.revision - keep
    if target <= 0:
        return 0
    compact_to(client, target)
    return target


def compact_to(client: c.Client, revision: int) -> None:
    """Compact etcd's history up to `revision`. An already compacted revision is not an
    error (another process compacted as far or further)."""
    try:
        client.call(client.kv.Compact, etcdrpc.CompactionRequest(revision=revision), "compact")
    except c.Compacted:
        return
