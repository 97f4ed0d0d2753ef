"""Hand a successor to the worker whose finish made it ready, inside the finish transaction.

Without a hand-off, a finish writes the successor's queue entry and a claim takes it: a second
transaction, and every worker's watch wakes for the entry and may race for it. With one, the
finish transaction ends in a nested transaction that compares that no queue entry lies before
the successor's (nothing of higher priority in any run, nothing earlier within its priority)
and that nobody owns it. If so it claims the successor for the finishing worker (ownership key
on the worker's lease, a running attempt), else it queues it as before: one round trip either
way, and the queue order is exactly that of a claim that read the head. (etcd evaluates every
compare of a transaction, nested ones included, before any of its writes: the nested compare
sees the queue as it was before this finish, whose own new entries, the other successors', sort
after the one handed over.) Successors with locks,
a selector the worker does not match, a run with a parallelism limit or a run left to the
leading scheduler's dispatch are queued as before.

The ownership key carries a nonce derived from the finishing attempt's token, so when the
finish's reply is lost and its retry finds the attempt recorded, the retry also finds the
successor it was handed (`recover`) instead of leaving it owned by nobody who runs it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from runner import errors, transitions
from runner.models import Lease, TaskState
from runner.store.etcd import client as c
from runner.store.etcd import cluster, flow, head, workers
from runner.store.etcd.claim import Claimer, claim_writes, leases_of, remember
from runner.store.etcd.context import MAX_OPS, Ctx, Pick
from runner.store.etcd.records import TaskRec, load_own, load_run, load_task


@dataclass(frozen=True)
class Taker:
    """The worker a finish may hand a successor to."""

    worker_id: str
    lease_id: int
    labels: Mapping[str, str] | None


@dataclass
class Handoff:
    """A hand-off prepared in a finish transaction, at `index` among its operations."""

    taker: Taker
    pick: Pick
    run_item: c.Item
    succ_keys: list[str]
    index: int


def taker(ctx: Ctx, worker_id: str, labels: Mapping[str, str] | None) -> Taker | None:
    """Who a finish may hand a successor to: the worker, unless it is draining or has
    tasks assigned by the scheduler (those come first)."""
    try:
        view = cluster.worker_view(ctx, worker_id)
        lease = ctx.leases.get(worker_id) or workers.lease_of(ctx, worker_id)[0]
    except errors.StoreError:
        return None  # LeaseLost too: the finish itself will say so
    if view.draining or view.assigned:
        return None
    return Taker(worker_id, lease, labels)


def nonce_of(token: int) -> str:
    """The ownership nonce of a successor handed over by the finish of `token`."""
    return f"finish-{token}"


def prepare(
    ctx: Ctx,
    b: flow.Batch,
    taker: Taker | None,
    token: int,
    run_item: c.Item,
    queued: list[tuple[c.Item, TaskRec]],
    *,
    now: float,
) -> Handoff | None:
    """Replace the writes that queue the first eligible successor in `b` by a nested
    transaction that claims it for `taker` when nothing is ahead of it, else queues it."""
    run = load_run(run_item.value)
    if (
        taker is None
        or run.get("parallelism")
        or run.get("halted")
        or cluster.reserved(run, ctx.cluster.mode)
    ):
        return None
    ready = sorted(
        (
            (rec["qkey"], item, rec)
            for item, rec in queued
            if rec["state"] == TaskState.READY.value and rec.get("qkey")
        ),
        key=lambda x: x[0],
    )
    if not ready:
        return None
    qkey, item, rec = ready[0]
    spec = rec["spec"]
    if (
        spec.get("mutex")
        or spec.get("semaphore")
        or rec.get("dsp")
        or not transitions.selector_matches(spec.get("selector") or {}, taker.labels)
    ):
        return None
    writes = [op for op in b.ops if _put_key(op) in (qkey, item.key)]
    if len(writes) != 2:
        return None
    b.ops = [op for op in b.ops if op not in writes]
    entry = next(op.request_put for op in writes if _put_key(op) == qkey)
    pick = Pick(c.Item(qkey, entry.value, 0, 0, 0), item, run["id"], copy.deepcopy(rec))
    inner = flow.Batch(
        compares=[
            *head.before(ctx, qkey),
            c.created_at(ctx.keys.own(pick.run_id, spec["id"]), 0),
        ]
    )
    who = Claimer(taker.worker_id, taker.lease_id, nonce_of(token))
    claim_writes(inner, ctx.keys, pick, who, 0, now=now)
    succ = flow.narrow_succ(pick.rec)
    room = MAX_OPS - len(inner.ops)
    succ_keys = [ctx.keys.task(pick.run_id, s) for s in succ] if len(succ) <= room else []
    inner.ops.extend(c.get(k) for k in succ_keys)  # for its finish: no read before it
    b.ops.append(c.nested(inner.compares, inner.ops, writes))
    return Handoff(taker, pick, run_item, succ_keys, len(b.ops) - 1)


def taken(ctx: Ctx, h: Handoff | None, responses: list[object], revision: int) -> list[Lease]:
    """The lease of the handed-over successor, when the nested transaction claimed it."""
    if h is None:
        return []
    nested = responses[h.index].response_txn  # type: ignore[attr-defined]
    if not nested.succeeded:
        return []
    found = {i.key: i for i in c.items_of(nested.responses)}
    after = {h.run_item.key: h.run_item}
    remember(ctx, h.pick, 0, revision, after, {k: found.get(k) for k in h.succ_keys})
    return leases_of(ctx, [h.pick], after, h.taker.worker_id, revision)


def recover(ctx: Ctx, token: int, run_id: str, rec: TaskRec, taker: Taker | None) -> list[Lease]:
    """After a finish whose reply was lost: the successor its transaction handed over, if any
    (its ownership key carries the finish's nonce)."""
    succ = flow.narrow_succ(rec)  # wide successors are never handed over
    if taker is None or not succ or len(rec.get("succ", [])) > flow.PER_TXN:
        return []
    keys = ctx.keys
    owns, _ = ctx.client.read_many(keys.own(run_id, s) for s in succ)
    for task_id in succ:
        own = owns.get(keys.own(run_id, task_id))
        if own is None or load_own(own.value).get("nonce") != nonce_of(token):
            continue
        found, _ = ctx.client.read_many([keys.task(run_id, task_id), keys.run(run_id)])
        task, run_item = found.get(keys.task(run_id, task_id)), found.get(keys.run(run_id))
        if task is None or run_item is None:
            raise errors.StoreError(f"handed-over task {run_id}/{task_id} has no record")
        pick = Pick(c.Item("", b"{}", 0, 0, 0), task, run_id, load_task(task.value))
        return leases_of(ctx, [pick], {run_item.key: run_item}, taker.worker_id, own.create)
    return []


def _put_key(op: object) -> str | None:
    if op.WhichOneof("request") != "request_put":  # type: ignore[attr-defined]
        return None
    return str(op.request_put.key.decode())  # type: ignore[attr-defined]
