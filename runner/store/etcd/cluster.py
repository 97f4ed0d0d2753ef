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
from typing import Any

from runner import dispatch
from runner.models import (
    DispatchView,
    LockHolder,
    LockInfo,
    ReadyTask,
    TaskKey,
    TaskRecord,
    TaskState,
    WorkerInfo,
)
from runner.store.etcd import client as c
from runner.store.etcd import records
from runner.store.etcd.context import Cluster, Ctx, WorkerView
from runner.store.etcd.keys import PRIORITY_BIAS, Keys
from runner.store.etcd.records import (
    DispatchRec,
    RunRec,
    dumps,
    load_dispatch,
    load_entry,
    load_leader,
    load_lock,
    load_run,
    load_task,
    load_worker,
)

CHUNK = 30  # tasks per assign/unassign transaction (3 operations each)
Needs = tuple[dict[str, str], list[dispatch.LockSpec]]  # a queued task's selector and locks


def spec_locks(spec: dict[str, Any]) -> list[dispatch.LockSpec]:
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
    return [(str(n), int(lim)) for n, lim in load_entry(entry.value).get("lk") or ()]


def reserved(run: RunRec, mode: tuple[bool, str], *, assigned: bool = False) -> bool:
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
        c.head(keys.assign_prefix(worker_id), 64),
        c.get(keys.leader()),
        c.get(keys.dispatch_key()),
    ]
    responses, rev = client.reads(ops, "cluster view")
    me, leader, default = (c.items_of([responses[i]]) for i in (0, 2, 3))
    owner = load_leader(leader[0].value).get("candidate") if leader else None
    mode = load_dispatch(default[0].value) if default else None
    strategy = mode["strategy"] if mode and mode["owner"] == owner else dispatch.PULL
    cl.mode = (owner is not None, strategy)
    view = WorkerView(
        rev=rev,
        draining=bool(me) and bool(load_worker(me[0].value).get("draining")),
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
    qkeys = [load_task(found[k].value).get("qkey") for k in task_keys if k in found]
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
            if worker is None or load_worker(worker.value).get("draining") or task is None:
                continue
            rec = load_task(task.value)
            entry = entries.get(rec.get("qkey") or "")
            if entry is None or not entry.key.startswith(keys.queue()):
                continue
            akey = keys.assign_key(worker_id, entry.key)
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
        items = client.scan(keys.assign_prefix(worker_id))
        if not items:
            return rev
        for start in range(0, len(items), CHUNK):
            rev = max(rev, _unassign_some(client, keys, items[start : start + CHUNK]))
    return rev


def _unassign_some(client: c.Client, keys: Keys, items: list[c.Item]) -> int:
    tasks, _ = client.read_many(keys.task(*keys.task_of(i.key)) for i in items)
    compares: list[Any] = []
    ops: list[Any] = []
    for item in items:
        compares.append(c.mod_is(item.key, item.mod))
        ops.append(c.delete(item.key))
        task = tasks.get(keys.task(*keys.task_of(item.key)))
        if task is None:
            continue
        rec = load_task(task.value)
        if rec.get("qkey") != item.key:
            continue  # claimed or cancelled meanwhile: nothing to put back
        qkey = keys.queue_key_of(item.key)
        rec["qkey"] = qkey
        compares.append(c.mod_is(task.key, task.mod))
        ops += [c.put(qkey, item.value), c.put(task.key, dumps(rec))]
    res = client.txn(compares, ops, "unassign")
    return res.revision if res.succeeded else 0


def orphans(client: c.Client, keys: Keys) -> set[str]:
    """Workers holding assignments whose worker record is gone (lease expired)."""
    assigned = {keys.worker_of(i.key) for i in client.scan(keys.assign_prefix(), keys_only=True)}
    if not assigned:
        return set()
    live = {keys.split(i.key, "worker")[0] for i in client.scan(keys.worker(), keys_only=True)}
    return assigned - live


def drain(client: c.Client, keys: Keys, name: str) -> tuple[list[str], int]:
    """Flag the live workers named `name` (or with that id) draining; ids and revision."""
    ids: list[str] = []
    rev = 0
    for item in client.scan(keys.worker()):
        value = load_worker(item.value)
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
    responses, rev = client.reads([c.count(keys.lock_prefix(n)) for n in names], "locks")
    return {n: int(r.response_range.count) for n, r in zip(names, responses, strict=True)}, rev


def live_workers(client: c.Client, keys: Keys, *, loads_too: bool) -> list[WorkerInfo]:
    """Live workers by name; with `loads_too`, running (held attempts) and assigned counted."""
    infos = [load_worker(i.value) for i in client.scan(keys.worker())]
    infos.sort(key=lambda d: (d["name"], d["id"]))
    out = [records.worker_info(d) for d in infos]
    if not loads_too or not out:
        return out
    prefixes = [p for w in out for p in (keys.held(w.id), keys.assign_prefix(w.id))]
    counts = client.counts(prefixes)
    return [
        dataclasses.replace(w, running=counts[2 * i], assigned=counts[2 * i + 1])
        for i, w in enumerate(out)
    ]


# ---------------------------------------------------------------------- dispatch, locks, reasons


def view(
    client: c.Client, keys: Keys, cl: Cluster, *, now: float, default: str, limit: int
) -> DispatchView:
    """See Store.dispatch_view."""
    if default == dispatch.PULL and not non_pull_runs(client, keys, cl):
        return DispatchView()
    entries = client.first(keys.queue(), limit)[0]
    due = [e for e in entries if float(load_entry(e.value).get("nb", 0)) <= now]
    held, _ = holders(client, keys, (n for e in due for n, _ in entry_locks(e)))
    tasks: list[ReadyTask] = []
    for e in due:
        value = load_entry(e.value)
        dsp = value.get("dsp")
        if (dsp or default) == dispatch.PULL or not dispatch.locks_free(entry_locks(e), held):
            continue
        run_id, task_id = keys.task_of(e.key)
        priority = dispatch_priority(keys, e.key)
        tasks.append(
            ReadyTask(
                run_id=run_id,
                task_id=task_id,
                priority=priority,
                selector=dict(value.get("sel") or {}),
                dispatch=dsp,
            )
        )
    workers = live_workers(client, keys, loads_too=True) if tasks else []
    return DispatchView(workers=tuple(workers), tasks=tuple(tasks))


def dispatch_priority(keys: Keys, entry_key: str) -> int:
    return PRIORITY_BIAS - int(keys.split(entry_key, "queue")[0])


def non_pull_runs(client: c.Client, keys: Keys, cl: Cluster) -> bool:
    """Some unfinished run has its own non-pull `spec.dispatch` (run records cached: the
    strategy of a run never changes)."""
    active = [keys.split(i.key, "active")[0] for i in client.scan(keys.active(), keys_only=True)]
    missing = [r for r in active if r not in cl.run_dispatch]
    if missing:
        found, _ = client.read_many(keys.run(r) for r in missing)
        for r in missing:
            item = found.get(keys.run(r))
            cl.run_dispatch[r] = None if item is None else load_run(item.value).get("dispatch")
    return any((cl.run_dispatch.get(r) or dispatch.PULL) != dispatch.PULL for r in active)


def list_locks(client: c.Client, keys: Keys) -> list[LockInfo]:
    """Every lock with holders or waiters (queued or assigned entries that take it)."""
    held: dict[str, list[LockHolder]] = {}
    for item in client.scan(keys.lock_prefix()):
        name, run_id, task_id = keys.split(item.key, "lock")
        value = load_lock(item.value)
        held.setdefault(name, []).append(
            LockHolder(
                run_id=run_id,
                task_id=task_id,
                attempt=int(value["attempt"]),
                worker_id=str(value["worker"]),
            )
        )
    limits: dict[str, int] = {}
    waiters: dict[str, list[TaskKey]] = {}
    for item in [*client.scan(keys.queue()), *client.scan(keys.assign_prefix())]:
        for name, lim in entry_locks(item):
            waiters.setdefault(name, []).append(keys.task_of(item.key))
            limits.setdefault(name, lim)
    for name, hs in held.items():
        limits.setdefault(name, int(loads_limit(client, keys, name, hs)))
    return [
        LockInfo(
            name=n,
            limit=limits[n],
            holders=tuple(held.get(n, ())),
            waiters=tuple(waiters.get(n, ())),
        )
        for n in sorted(limits)
    ]


def loads_limit(client: c.Client, keys: Keys, name: str, hs: list[LockHolder]) -> int:
    """A held lock's limit: from its name (mutex) or a holder's task spec."""
    if name.startswith("mutex:"):
        return 1
    item = client.get(keys.task(hs[0].run_id, hs[0].task_id))
    locks = spec_locks(load_task(item.value)["spec"]) if item is not None else []
    return next((lim for n, lim in locks if n == name), len(hs))


def with_reasons(
    client: c.Client,
    keys: Keys,
    records: tuple[TaskRecord, ...],
    needs: dict[str, Needs],
) -> tuple[TaskRecord, ...]:
    """The records with the waiting reason of queued tasks that have a selector no live
    worker matches or a lock without room (`needs`: task id -> (selector, locks))."""
    queued = {r.id for r in records if r.state is TaskState.READY and r.id in needs}
    if not queued:
        return records
    selectors = any(needs[t][0] for t in queued)
    workers = live_workers(client, keys, loads_too=False) if selectors else []
    held, _ = holders(client, keys, (n for t in queued for n, _ in needs[t][1]))
    out: list[TaskRecord] = []
    for r in records:
        if r.id in queued:
            selector, locks = needs[r.id]
            why = dispatch.no_worker_reason(selector, workers) or dispatch.lock_reason(locks, held)
            r = dataclasses.replace(r, waiting_reason=why or r.waiting_reason)
        out.append(r)
    return tuple(out)


def needs_of(spec: dict[str, Any]) -> Needs | None:
    """What a task's waiting reason depends on: (selector, locks), or None for neither."""
    locks = spec_locks(spec)
    selector = dict(spec.get("selector") or {})
    return (selector, locks) if selector or locks else None


def worker_view(ctx: Ctx, worker_id: str) -> WorkerView:
    """The worker's assignments and drain flag, read again only when the watch saw a
    change to a cluster key (or this object wrote one)."""
    cl = ctx.cluster
    ctx.watcher.start(ctx.client.revision)  # its cluster_rev tells when to read again
    if needs_refresh(cl, worker_id, ctx.watcher.cluster_rev):
        return refresh(ctx.client, ctx.keys, cl, worker_id)
    return cl.views[worker_id]


def set_dispatch(ctx: Ctx, candidate: str, strategy: str, *, lease: int) -> None:
    """See Store.set_dispatch: `cluster/dispatch` on the candidate's election `lease`."""
    value: DispatchRec = {"owner": candidate, "strategy": strategy}
    put = c.put(ctx.keys.dispatch_key(), dumps(value), lease)
    touched(ctx, ctx.client.txn([], [put], "dispatch").revision)


def touched(ctx: Ctx, rev: int) -> None:
    """This object wrote cluster keys: its workers' next claims read them again."""
    cl = ctx.cluster
    cl.dirty = max(cl.dirty, rev, ctx.client.revision)
