"""The etcd store's cluster state: assignments, locks, drains and the dispatch default.

Keys under the store prefix (docs/ARCHITECTURE.md, "Cluster"):

- `assign/{worker}/{queue suffix}`: a queue entry that `assign` moved under a worker in one
  transaction (same value; the task record's `qkey` names it). It moves back to
  `queue/{queue suffix}` (same place in the order) when the worker dies (`sweep`), drains or
  deregisters.
- `lock/{name}/{run}/{task}`: a held mutex or semaphore slot, `{"worker", "attempt"}`, created by
  the claim on the holder's lease and deleted by `finish`, a loss, or etcd when the lease ends.
- `cluster/dispatch`: `{"owner", "strategy"}`, on the leading scheduler's election lease.

A worker learns what concerns it (its assignments, a drain, the dispatch default) from one read
(`refresh`), repeated only when its store object's watch saw a change under `assign/`,
`worker/`, `cron/leader` or `cluster/` (or this object wrote one): claims without such changes
cost what they cost before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import dispatch
from runner.models import (
    TaskKey,
    WorkerInfo,
)
from runner.store import etcd_client as c
from runner.store.etcd_keys import Keys, dumps, loads, q

CHUNK = 30  # tasks per assign/unassign transaction (3 operations each)
Rec = dict[str, Any]


@dataclass
class WorkerView:
    """What one worker's claims need from the cluster keys, as of revision `rev`."""

    rev: int = 0
    draining: bool = False
    assigned: list[c.Item] = field(default_factory=list)


@dataclass
class Cluster:
    """Per store object: the dispatch mode and each local worker's view."""

    mode: tuple[bool, str] = (False, dispatch.PULL)  # (a scheduler leads, its default)
    views: dict[str, WorkerView] = field(default_factory=dict)
    dirty: int = 0  # revision of this object's latest write to a cluster key
    run_dispatch: dict[str, str | None] = field(default_factory=dict)  # run -> spec.dispatch


# ---------------------------------------------------------------------- keys


def assign_prefix(keys: Keys, worker_id: str = "") -> str:
    return f"{keys.prefix}assign/" + (f"{q(worker_id)}/" if worker_id else "")


def assign_key(keys: Keys, worker_id: str, qkey: str) -> str:
    return assign_prefix(keys, worker_id) + qkey[len(keys.queue()) :]


def queue_key_of(keys: Keys, akey: str) -> str:
    """The queue key an assignment came from (and goes back to)."""
    rest = akey[len(assign_prefix(keys)) :]
    return keys.queue() + rest.split("/", 1)[1]


def worker_of(keys: Keys, akey: str) -> str:
    return keys.split(akey, "assign")[0]


def task_of(keys: Keys, entry_key: str) -> tuple[str, str]:
    """(run, task) of a queue entry or an assignment."""
    parts = keys.split(entry_key, "queue" if entry_key.startswith(keys.queue()) else "assign")
    return parts[-2], parts[-1]


def lock_prefix(keys: Keys, name: str = "") -> str:
    return f"{keys.prefix}lock/" + (f"{q(name)}/" if name else "")


def lock_key(keys: Keys, name: str, run_id: str, task_id: str) -> str:
    return f"{lock_prefix(keys, name)}{q(run_id)}/{q(task_id)}"


def dispatch_key(keys: Keys) -> str:
    return f"{keys.prefix}cluster/dispatch"


def watched(keys: Keys) -> tuple[bytes, ...]:
    """Key prefixes whose changes make a worker `refresh`."""
    p = keys.prefix
    return tuple(f"{p}{k}".encode() for k in ("assign/", "worker/", "cron/leader", "cluster/"))


def spec_locks(spec: Rec) -> list[dispatch.LockSpec]:
    """The locks of a task spec dict (as `dispatch.task_locks`)."""
    locks: list[dispatch.LockSpec] = []
    if spec.get("mutex"):
        locks.append((f"mutex:{spec['mutex']}", 1))
    sem = spec.get("semaphore")
    if sem:
        locks.append((f"semaphore:{sem['name']}", int(sem["limit"])))
    return locks


def entry_locks(entry: c.Item) -> list[dispatch.LockSpec]:
    if b'"lk"' not in entry.value:
        return []  # most entries: no decoding
    return [(str(n), int(lim)) for n, lim in loads(entry.value).get("lk") or ()]


def reserved(run: Rec, mode: tuple[bool, str], *, assigned: bool = False) -> bool:
    """A shared-queue task of `run` left for the leading scheduler to assign."""
    leading, default = mode
    return not assigned and leading and (run.get("dispatch") or default) != dispatch.PULL


# ---------------------------------------------------------------------- a worker's view


def needs_refresh(cl: Cluster, worker_id: str, watched_rev: int) -> bool:
    view = cl.views.get(worker_id)
    return view is None or view.assigned != [] or max(watched_rev, cl.dirty) > view.rev


def refresh(client: c.Client, keys: Keys, cl: Cluster, worker_id: str) -> WorkerView:
    """Read the worker's record and assignments and the dispatch default, in one round trip."""
    ops = [
        c.get(keys.worker(worker_id)),
        c.head(assign_prefix(keys, worker_id), 64),
        c.get(f"{keys.prefix}cron/leader"),
        c.get(dispatch_key(keys)),
    ]
    responses, rev = client.reads(ops, "cluster view")
    me, leader, default = (c.items_of([responses[i]]) for i in (0, 2, 3))
    owner = loads(leader[0].value).get("candidate") if leader else None
    mode = loads(default[0].value) if default else {}
    strategy = str(mode.get("strategy", dispatch.PULL)) if mode.get("owner") == owner else "pull"
    cl.mode = (owner is not None, strategy)
    view = WorkerView(
        rev=rev,
        draining=bool(me) and bool(loads(me[0].value).get("draining")),
        assigned=c.items_of([responses[1]]),
    )
    cl.views[worker_id] = view
    return view


# ---------------------------------------------------------------------- assign / unassign


def assign(
    client: c.Client, keys: Keys, assignments: Sequence[tuple[TaskKey, str]]
) -> tuple[list[TaskKey], int]:
    """Move each still queued task's entry under its live, non-draining worker; the keys
    assigned and the revision of the last write."""
    task_keys = [keys.task(r, t) for (r, t), _ in assignments]
    workers = {keys.worker(w) for _, w in assignments}
    found, _ = client.read_many([*task_keys, *workers])
    qkeys = [loads(found[k].value).get("qkey") for k in task_keys if k in found]
    entries, _ = client.read_many(k for k in qkeys if k)
    done: list[TaskKey] = []
    rev = 0
    todo = list(zip(assignments, task_keys, strict=True))
    for start in range(0, len(todo), CHUNK):
        b_compares: list[Any] = []
        ops: list[Any] = []
        keys_in: list[TaskKey] = []
        for ((run_id, task_id), worker_id), task_key in todo[start : start + CHUNK]:
            worker = found.get(keys.worker(worker_id))
            task = found.get(task_key)
            if worker is None or loads(worker.value).get("draining") or task is None:
                continue
            rec = loads(task.value)
            entry = entries.get(rec.get("qkey") or "")
            if entry is None or not entry.key.startswith(keys.queue()):
                continue
            akey = assign_key(keys, worker_id, entry.key)
            b_compares += [c.mod_is(task.key, task.mod), c.created_at(worker.key, worker.create)]
            rec["qkey"] = akey
            ops += [c.delete(entry.key), c.put(akey, entry.value), c.put(task.key, dumps(rec))]
            keys_in.append((run_id, task_id))
        if ops:
            res = client.txn(b_compares, ops, "assign")
            if res.succeeded:
                done.extend(keys_in)
                rev = res.revision
    return done, rev


def unassign(client: c.Client, keys: Keys, worker_id: str) -> int:
    """Move the worker's assignments back to the shared queue; the revision written (0)."""
    rev = 0
    for _ in range(100):
        items = client.scan(assign_prefix(keys, worker_id))
        if not items:
            return rev
        for start in range(0, len(items), CHUNK):
            rev = max(rev, _unassign_some(client, keys, items[start : start + CHUNK]))
    return rev


def _unassign_some(client: c.Client, keys: Keys, items: list[c.Item]) -> int:
    tasks, _ = client.read_many(keys.task(*task_of(keys, i.key)) for i in items)
    compares: list[Any] = []
    ops: list[Any] = []
    for item in items:
        compares.append(c.mod_is(item.key, item.mod))
        ops.append(c.delete(item.key))
        task = tasks.get(keys.task(*task_of(keys, item.key)))
        if task is None:
            continue
        rec = loads(task.value)
        if rec.get("qkey") != item.key:
            continue  # claimed or cancelled meanwhile: nothing to put back
        qkey = queue_key_of(keys, item.key)
        rec["qkey"] = qkey
        compares.append(c.mod_is(task.key, task.mod))
        ops += [c.put(qkey, item.value), c.put(task.key, dumps(rec))]
    res = client.txn(compares, ops, "unassign")
    return res.revision if res.succeeded else 0


def orphans(client: c.Client, keys: Keys) -> set[str]:
    """Workers holding assignments whose worker record is gone (lease expired)."""
    assigned = {worker_of(keys, i.key) for i in client.scan(assign_prefix(keys), keys_only=True)}
    if not assigned:
        return set()
    live = {keys.split(i.key, "worker")[0] for i in client.scan(keys.worker(), keys_only=True)}
    return assigned - live


def drain(client: c.Client, keys: Keys, name: str) -> tuple[list[str], int]:
    """Flag the live workers named `name` (or with that id) draining; ids and revision."""
    ids: list[str] = []
    rev = 0
    for item in client.scan(keys.worker()):
        value = loads(item.value)
        if name not in (value.get("name"), value.get("id")):
            continue
        value["draining"] = True
        put = c.put(item.key, dumps(value), int(value["lease"]))
        res = client.txn([c.created_at(item.key, item.create)], [put], "drain")
        if res.succeeded:
            ids.append(str(value["id"]))
            rev = max(res.revision, unassign(client, keys, str(value["id"])))
    return sorted(ids), rev


# ---------------------------------------------------------------------- views


def holders(client: c.Client, keys: Keys, names: Iterable[str]) -> tuple[dict[str, int], int]:
    """Holders per lock name, and the revision of the read (for `unchanged_since`)."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}, 0
    responses, rev = client.reads([c.count(lock_prefix(keys, n)) for n in names], "locks")
    return {n: int(r.response_range.count) for n, r in zip(names, responses, strict=True)}, rev


def live_workers(client: c.Client, keys: Keys, *, loads_too: bool) -> list[WorkerInfo]:
    """Live workers by name; with `loads_too`, running (held attempts) and assigned counted."""
    infos = [loads(i.value) for i in client.scan(keys.worker())]
    infos.sort(key=lambda d: (d["name"], d["id"]))
    out = [WorkerInfo(**{k: v for k, v in d.items() if k not in ("ttl", "lease")}) for d in infos]
    if not loads_too or not out:
        return out
    prefixes = [p for w in out for p in (keys.held(w.id), assign_prefix(keys, w.id))]
    counts = client.counts(prefixes)
    return [
        dataclasses.replace(w, running=counts[2 * i], assigned=counts[2 * i + 1])
        for i, w in enumerate(out)
    ]
