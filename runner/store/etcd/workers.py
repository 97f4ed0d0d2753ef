"""Workers on etcd: their records and leases, heartbeats, and losing dead workers' attempts.

A worker's record `worker/{id}` lives on its etcd lease (`register_worker`), so etcd deletes it,
with the worker's ownership keys and locks, when the lease expires. Its `held/` keys (no lease)
survive: `sweep` finds the held attempts without an ownership key and loses them (`lose`).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.models import AttemptState, Heartbeat, Reason, RunState, TaskKey, TaskState, WorkerInfo
from runner.store.base import MAX_LOSSES
from runner.store.etcd import aging, cluster, flow, records, runs
from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx, worker_lost
from runner.store.etcd.records import (
    ActiveRec,
    RunRec,
    WorkerRec,
    dumps,
    load_run,
    load_task,
    load_worker,
    loads,
    token_of,
)

FULL_SWEEP_EVERY = 5.0  # seconds: a sweep runs in full at least this often


@dataclass
class Swept:
    """The last sweep of a store object: watch revision, time, and the next run deadline."""

    rev: int = 0
    at: float = 0.0
    deadline: float = 0.0


def register_worker(ctx: Ctx, info: WorkerInfo, *, now: float, ttl: float) -> None:
    """Grant the worker's etcd lease and put its record on it."""
    lease = ctx.client.grant(ttl)
    with ctx.lock:
        ctx.leases[info.id] = lease
    put_worker(ctx, info.id, worker_dict(info, now, ttl, lease, info.running), lease)
    ctx.clocks.own(info.id, ttl=ttl)


def read_clocks(ctx: Ctx, *, now: float) -> dict[str, c.Item]:
    """Read every worker record into the store object's clock view; the records by key."""
    items = {i.key: i for i in ctx.client.scan(ctx.keys.worker())}
    rows = []
    for item in items.values():
        rec = load_worker(item.value)
        rows.append((rec["id"], item.mod, float(rec["heartbeat_at"]), float(rec["ttl"])))
    ctx.clocks.refresh(rows, now=now)
    return items


def put_worker(ctx: Ctx, worker_id: str, value: WorkerRec, lease: int) -> None:
    try:
        ctx.client.txn([], [c.put(ctx.keys.worker(worker_id), dumps(value), lease)], "worker")
    except c.LeaseMissing:
        raise worker_lost(worker_id) from None


def lease_of(ctx: Ctx, worker_id: str) -> tuple[int, WorkerRec]:
    """The worker's etcd lease, from its record (LeaseLost when the record is gone)."""
    item = ctx.client.get(ctx.keys.worker(worker_id))
    if item is None:
        raise worker_lost(worker_id)
    value: WorkerRec = loads(item.value)
    return int(value["lease"]), value


def heartbeat(ctx: Ctx, worker_id: str, *, now: float, running: int) -> Heartbeat:
    """Refresh the worker's lease (LeaseLost once expired); abort attempts of ended runs."""
    client, keys = ctx.client, ctx.keys
    item = read_clocks(ctx, now=now).get(keys.worker(worker_id))
    if item is None:
        raise worker_lost(worker_id)
    value = load_worker(item.value)
    lease = int(value["lease"])
    if client.keepalive(lease) <= 0:
        raise worker_lost(worker_id)
    value.update({"running": running, "heartbeat_at": now, "expires_at": now + float(value["ttl"])})
    value["clock_skew"] = ctx.clocks.skew(worker_id)
    put_worker(ctx, worker_id, value, lease)
    held_items = client.scan(keys.held(worker_id), keys_only=True)
    held = [keys.split(i.key, "held")[1:3] for i in held_items]
    found, _ = client.read_many(keys.run(r) for r, _ in held)
    ended = {k for k, v in found.items() if _run_ended(load_run(v.value))}
    abort = frozenset((r, t) for r, t in held if keys.run(r) in ended)
    return Heartbeat(abort=abort, drain=bool(value.get("draining")))


def _run_ended(run: RunRec) -> bool:
    return RunState(run["state"]).terminal


def deregister_worker(ctx: Ctx, worker_id: str, *, now: float) -> None:
    """Return the worker's attempts to the queue (losses not counted), revoke its lease."""
    client, keys = ctx.client, ctx.keys
    with ctx.lock:
        ctx.leases.pop(worker_id, None)
    item = client.get(keys.worker(worker_id))
    for held in client.scan(keys.held(worker_id)):
        key = lose(ctx, worker_id, held, now=now, counted=False)
        if key is not None:
            flow.settle(client, keys, key[0], now=now)
    cluster.touched(ctx, cluster.unassign(client, keys, worker_id))
    if item is not None:
        value: WorkerRec = loads(item.value)
        client.revoke(int(value["lease"]))


def list_workers(ctx: Ctx) -> list[WorkerInfo]:
    """Live workers (their lease exists), by name."""
    out = [records.worker_info(load_worker(i.value)) for i in ctx.client.scan(ctx.keys.worker())]
    return sorted(out, key=lambda w: (w.name, w.id))


def sweep(ctx: Ctx, swept: Swept, *, now: float) -> list[TaskKey]:
    """Lose attempts of expired leases, time out runs, drain leftover markers. Skipped
    when the watch saw no commit since the last sweep (an expired lease deletes keys, so
    it is a commit), no run deadline has come, and the last full sweep is recent."""
    rev = ctx.watcher.start(ctx.client.revision)
    if rev == swept.rev and now < swept.deadline and now - swept.at < FULL_SWEEP_EVERY:
        return []
    changed = lose_expired(ctx, now=now)
    deadline = end_overdue(ctx, changed, now=now)
    settle_runs(ctx, changed, now=now)
    deadline = min(deadline, aging.promote(ctx.client, ctx.keys, now=now))  # spec.aging
    swept.rev, swept.at, swept.deadline = rev, now, deadline
    return changed


def lose_expired(ctx: Ctx, *, now: float) -> list[TaskKey]:
    """Lose the held attempts whose ownership key is gone; unassign dead workers' tasks."""
    client, keys = ctx.client, ctx.keys
    # both at one revision: a task claimed between two reads would look lost
    while True:
        owns, rev = client.scan_at(keys.owns(), keys_only=True)
        try:
            helds = client.scan_at(keys.helds(), revision=rev)[0]
        except c.Compacted:
            continue  # a compaction passed `rev` between the two: read both again
        break
    owned = {i.key for i in owns}
    changed: list[TaskKey] = []
    for held in helds:
        worker_id, run_id, task_id = keys.split(held.key, "held")
        if keys.own(run_id, task_id) in owned:
            continue
        key = lose(ctx, worker_id, held, now=now, counted=True)
        if key is not None:
            changed.append(key)
    for worker_id in cluster.orphans(client, keys):  # dead: back to the queue
        cluster.touched(ctx, cluster.unassign(client, keys, worker_id))
    return changed


def end_overdue(ctx: Ctx, changed: list[TaskKey], *, now: float) -> float:
    """Fail the runs past their deadline (their cancelled tasks added to `changed`); the
    soonest deadline still to come."""
    soonest = float("inf")
    for item in ctx.client.scan(ctx.keys.active()):
        run_id = ctx.keys.split(item.key, "active")[0]
        deadline = _active(item).get("deadline")
        if deadline is not None and deadline > now:
            soonest = min(soonest, float(deadline))
        if deadline is not None and deadline <= now:
            ids = runs.end_run(ctx, run_id, RunState.FAILED, "timeout", now=now)
            changed.extend((run_id, t) for t in ids)
    return soonest


def _active(item: c.Item) -> ActiveRec:
    value: ActiveRec = loads(item.value)
    return value


def settle_runs(ctx: Ctx, changed: list[TaskKey], *, now: float) -> None:
    """Finish leftover `ending/` markers, then drain and maybe end every run with markers,
    changes or still active."""
    client, keys = ctx.client, ctx.keys
    for item in client.scan(keys.ending(), keys_only=True):
        flow.cancel_unstarted(client, keys, keys.split(item.key, "ending")[0])
    run_ids = {keys.split(i.key, "prop")[0] for i in client.scan(keys.prop(), keys_only=True)}
    run_ids |= {keys.split(i.key, "gate")[0] for i in client.scan(keys.gate(), keys_only=True)}
    run_ids |= {k[0] for k in changed} | {
        keys.split(i.key, "active")[0] for i in client.scan(keys.active(), keys_only=True)
    }
    for run_id in run_ids:
        flow.settle(client, keys, run_id, now=now)


def lose(
    ctx: Ctx, worker_id: str, held: c.Item, *, now: float, counted: bool
) -> tuple[str, str] | None:
    """Record a held attempt `lost` and requeue its task (fail it on the MAX_LOSSES-th counted
    loss; cancel it when its run has ended). One transaction; None when someone else did."""
    keys = ctx.keys
    run_id, task_id = keys.split(held.key, "held")[1:3]
    own_key, task_key, run_key = (
        keys.own(run_id, task_id),
        keys.task(run_id, task_id),
        keys.run(run_id),
    )
    found, _ = ctx.client.read_many([own_key, task_key, run_key])
    own, task, run_item = found.get(own_key), found.get(task_key), found.get(run_key)
    if task is None or run_item is None or (own is not None and counted):
        return None
    rec, run = load_task(task.value), load_run(run_item.value)
    b = flow.Batch()
    b.guard(held.key, held.mod)
    b.guard(task.key, task.mod)
    b.guard(run_key, run_item.mod)
    b.compares.append(c.created_at(own_key, 0 if own is None else own.create))
    attempt = rec["attempts"][-1]
    attempt.update(
        {"state": AttemptState.LOST.value, "reason": Reason.LOST.value, "finished_at": now}
    )
    attempt["token"] = attempt["token"] or token_of(task.mod, int(attempt.get("slot", 0)))
    rec["losses"] = int(rec.get("losses", 0)) + int(counted)
    if RunState(run["state"]).terminal:
        needs = flow.complete(b, keys, run_item, run, rec, TaskState.CANCELLED)
    elif rec["losses"] >= MAX_LOSSES:
        needs = flow.complete(b, keys, run_item, run, rec, TaskState.FAILED)
    else:
        needs = False
        flow.enqueue(b, keys, run_id, rec, now=now)
    if needs:
        b.put(keys.prop(run_id, task_id), b"1")
    b.put(task.key, rec)
    b.delete(held.key)
    for name, _ in cluster.spec_locks(rec["spec"]):  # the lost attempt's locks are free
        b.delete(keys.lock_key(name, run_id, task_id))
    if own is not None:
        b.delete(own_key)
    return (
        (run_id, task_id) if ctx.client.txn(b.compares, b.ops, "lose attempt").succeeded else None
    )


def worker_dict(info: WorkerInfo, now: float, ttl: float, lease: int, running: int) -> WorkerRec:
    return {
        "id": info.id,
        "name": info.name,
        "host": info.host,
        "pid": info.pid,
        "labels": info.labels,
        "weight": info.weight,
        "capacity": info.capacity,
        "version": info.version,
        "running": running,
        "heartbeat_at": now,
        "expires_at": now + ttl,
        "ttl": ttl,
        "lease": lease,
    }
