"""The etcd store's dispatch view, lock listing, waiting reasons and the cluster methods.

Built on the keys and transactions of `etcd_cluster` (see its docstring and docs/ARCHITECTURE.md,
"Cluster").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from runner import dispatch
from runner.models import (
    DispatchView,
    Lease,
    LockHolder,
    LockInfo,
    ReadyTask,
    TaskKey,
    TaskRecord,
    TaskState,
)
from runner.store import etcd_claim
from runner.store import etcd_client as c
from runner.store.etcd_cluster import (
    Cluster,
    WorkerView,
    assign,
    assign_prefix,
    dispatch_key,
    drain,
    entry_locks,
    holders,
    live_workers,
    lock_prefix,
    needs_refresh,
    refresh,
    spec_locks,
    task_of,
)
from runner.store.etcd_keys import PRIORITY_BIAS, Keys, dumps, loads
from runner.store.etcd_watch import Watcher
from runner.store.etcd_work import Ctx

Needs = tuple[dict[str, str], list[dispatch.LockSpec]]  # a queued task's selector and locks


def view(
    client: c.Client, keys: Keys, cl: Cluster, *, now: float, default: str, limit: int
) -> DispatchView:
    """See Store.dispatch_view."""
    if default == dispatch.PULL and not _non_pull_runs(client, keys, cl):
        return DispatchView()
    entries = client.first(keys.queue(), limit)[0]
    due = [e for e in entries if float(loads(e.value).get("nb", 0)) <= now]
    held, _ = holders(client, keys, (n for e in due for n, _ in entry_locks(e)))
    tasks: list[ReadyTask] = []
    for e in due:
        value = loads(e.value)
        dsp = value.get("dsp")
        if (dsp or default) == dispatch.PULL or not dispatch.locks_free(entry_locks(e), held):
            continue
        run_id, task_id = task_of(keys, e.key)
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


def _non_pull_runs(client: c.Client, keys: Keys, cl: Cluster) -> bool:
    """Some unfinished run has its own non-pull `spec.dispatch` (run records cached: the
    strategy of a run never changes)."""
    active = [keys.split(i.key, "active")[0] for i in client.scan(keys.active(), keys_only=True)]
    missing = [r for r in active if r not in cl.run_dispatch]
    if missing:
        found, _ = client.read_many(keys.run(r) for r in missing)
        for r in missing:
            item = found.get(keys.run(r))
            cl.run_dispatch[r] = None if item is None else loads(item.value).get("dispatch")
    return any((cl.run_dispatch.get(r) or dispatch.PULL) != dispatch.PULL for r in active)


def list_locks(client: c.Client, keys: Keys) -> list[LockInfo]:
    """Every lock with holders or waiters (queued or assigned entries that take it)."""
    held: dict[str, list[LockHolder]] = {}
    for item in client.scan(lock_prefix(keys)):
        name, run_id, task_id = keys.split(item.key, "lock")
        value = loads(item.value)
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
    for item in [*client.scan(keys.queue()), *client.scan(assign_prefix(keys))]:
        for name, lim in entry_locks(item):
            waiters.setdefault(name, []).append(task_of(keys, item.key))
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
    locks = spec_locks(loads(item.value)["spec"]) if item is not None else []
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


def claim_assigned(
    ctx: Ctx, worker_id: str, lease_id: int, entries: list[c.Item], *, now: float, limit: int
) -> list[Lease]:
    """Claim up to `limit` of the worker's assignments (`assign/{worker}/...`) in one txn."""
    due = [e for e in entries if float(loads(e.value).get("nb", 0)) <= now]
    ids = [list(task_of(ctx.keys, e.key)) for e in due]
    run_keys = list(dict.fromkeys(ctx.keys.run(r) for r, _ in ids))
    found, _ = ctx.client.read_many([*run_keys, *(ctx.keys.task(r, t) for r, t in ids)])
    open_runs = {
        k: found[k]
        for k in run_keys
        if k in found and etcd_claim._claimable_run(loads(found[k].value))
    }
    chosen = etcd_claim._within_limits(
        ctx, due, ids, open_runs, min(limit, etcd_claim.MAX_PICKS), assigned=True
    )
    picks = etcd_claim._picks(ctx, chosen, found)
    if not picks:
        return []
    return etcd_claim._commit_claim(ctx, worker_id, lease_id, picks, open_runs, now=now)


class EtcdClusterMixin:
    """Dispatch, drain and lock methods of `EtcdStore` (see runner.store.base.Store)."""

    client: c.Client
    keys: Keys

    ctx: Ctx
    _watcher: Watcher

    def _cluster(self) -> Cluster:
        return self.ctx.cluster

    def _worker_view(self, worker_id: str) -> WorkerView:
        """The worker's assignments and drain flag, read again only when the watch saw a
        change to a cluster key (or this object wrote one)."""
        cl = self.ctx.cluster
        self._watcher.start(self.client.revision)  # its cluster_rev tells when to read again
        if needs_refresh(cl, worker_id, self._watcher.cluster_rev):
            return refresh(self.client, self.keys, cl, worker_id)
        return cl.views[worker_id]

    _cron_lease_map: Callable[[], dict[str, int]]  # provided by EtcdCronMixin

    def dispatch_view(
        self, *, now: float, default: str = dispatch.PULL, limit: int = 1000
    ) -> DispatchView:
        """See Store.dispatch_view."""
        return view(self.client, self.keys, self._cluster(), now=now, default=default, limit=limit)

    def assign(self, assignments: Sequence[tuple[TaskKey, str]], *, now: float) -> list[TaskKey]:
        """See Store.assign: entries move from `queue/` to `assign/{worker}/` in one txn."""
        done, rev = assign(self.client, self.keys, assignments)
        self._touched(rev)
        return done

    def set_dispatch(self, candidate: str, strategy: str, *, now: float) -> None:
        """See Store.set_dispatch: `cluster/dispatch` on the candidate's election lease."""
        lease = self._cron_lease_map().get(candidate, 0)
        value = dumps({"owner": candidate, "strategy": strategy})
        res = self.client.txn([], [c.put(dispatch_key(self.keys), value, lease)], "dispatch")
        self._touched(res.revision)

    def drain_worker(self, name: str, *, now: float) -> list[str]:
        """See Store.drain_worker."""
        ids, rev = drain(self.client, self.keys, name)
        self._touched(rev)
        return ids

    def list_locks(self, *, now: float) -> list[LockInfo]:
        """See Store.list_locks."""
        return list_locks(self.client, self.keys)

    def _touched(self, rev: int) -> None:
        """This object wrote cluster keys: its workers' next claims read them again."""
        cl = self._cluster()
        cl.dirty = max(cl.dirty, rev, self.client.revision)
