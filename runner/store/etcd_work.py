"""Shared state of the etcd store's operations, fencing checks, logs, and losing attempts.

The fencing token is the ownership key's create revision (= the claim's revision, see
`etcd_claim`), shifted left 8 bits plus the task's slot in the transaction, so a batch claim
still gives every attempt its own token. A finish or log append compares the ownership key's
create revision and slot with the token, so a stale worker records nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner import errors, transitions
from runner.failpoints import Failpoints
from runner.models import (
    AttemptState,
    Lease,
    Outcome,
    Reason,
    RunState,
    TaskSpec,
    TaskState,
)
from runner.store import etcd_client as c
from runner.store import etcd_cluster as cluster
from runner.store import etcd_flow as flow
from runner.store import etcd_logs
from runner.store.base import MAX_LOSSES
from runner.store.etcd_keys import Keys, claim_revision, loads, token_of

Rec = dict[str, Any]
Seen = dict[str, c.Item | None]  # key -> its item as last known (None: absent)
MAX_OPS = 120  # operations per transaction, under etcd's 128
SENDERS = 8  # requests one store object sends at once
MAX_CLAIMED = 10_000  # remembered claims; more (leases never finished here) are forgotten


@dataclass
class Ctx:
    client: c.Client
    keys: Keys
    failpoints: Failpoints = field(default_factory=Failpoints)
    log_limit: int = 1024 * 1024
    # token -> the records its claim wrote and the successors it read: a finish compares
    # them without reading first (a stale entry only costs the finish one failed compare)
    claimed: dict[int, Seen] = field(default_factory=dict)
    guess: list[tuple[str, str]] = field(default_factory=list)  # next queue entries, probably
    # (queue entry, task record, run record) expected at the queue head: a claim without a read
    ahead: list[tuple[c.Item, c.Item, c.Item]] = field(default_factory=list)
    misses: int = 0  # claims left before guessing again, after a guess failed
    empty_at: int = 0  # a revision at which this object read an empty queue (0: unknown)
    # tokens whose finish transaction failed without an answer (it may have committed)
    uncertain: set[int] = field(default_factory=set)
    cluster: cluster.Cluster = field(default_factory=cluster.Cluster)  # assignments, drains
    lock_rev: int = 0  # revision at which the last claim counted lock holders

    _senders: ThreadPoolExecutor | None = None

    def senders(self) -> ThreadPoolExecutor:
        """Threads that send requests together (see `etcd_finish.finish_many`)."""
        if self._senders is None:
            self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="etcd-send")
        return self._senders

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)

    def remember(self, token: int, seen: Seen) -> None:
        if len(self.claimed) >= MAX_CLAIMED:
            self.claimed.clear()
        self.claimed[token] = seen


@dataclass
class Pick:
    entry: c.Item
    task: c.Item
    run_id: str
    rec: Rec
    lock_rev: int = 0  # lock holders were counted at this revision (0: no locks)
    written: bytes = b""  # the task record as the claim wrote it


def owns(own: c.Item | None, lease: Lease) -> bool:
    """The ownership key still carries the lease's token (create revision and slot)."""
    if own is None or own.create != claim_revision(lease.token):
        return False
    return token_of(own.create, int(loads(own.value).get("slot", 0))) == lease.token


def _worker_lost(worker_id: str) -> errors.LeaseLost:
    return errors.WorkerLeaseLost(worker_id)


# ---------------------------------------------------------------------- logs


def log_ops(ctx: Ctx, b: flow.Batch, lease: Lease, data: bytes, meta_item: c.Item | None) -> None:
    """Add an append of `data` to the attempt's log to the batch (guarded by the meta mod)."""
    keys = ctx.keys
    meta = None if meta_item is None else loads(meta_item.value)
    base = keys.log(lease.run_id, lease.task_id, lease.attempt)
    last_k = etcd_logs.needs_last(meta, len(data))
    last = None
    if last_k is not None:
        item = ctx.client.get(f"{base}{last_k:08d}")
        last = b"" if item is None else item.value
    plan = etcd_logs.plan_append(meta, last, data, limit=ctx.log_limit)
    b.guard(
        keys.log_meta(lease.run_id, lease.task_id, lease.attempt),
        0 if meta_item is None else meta_item.mod,
    )
    for k, piece in plan.puts:
        b.put(f"{base}{k:08d}", piece)
    for k in plan.deletes:
        b.delete(f"{base}{k:08d}")
    b.put(keys.log_meta(lease.run_id, lease.task_id, lease.attempt), plan.meta)


def append_log(ctx: Ctx, lease: Lease, text: str) -> None:
    """Append to the attempt's stored log, fenced by the ownership key's create revision."""
    data = text.encode()
    for _ in range(100):
        own_key = ctx.keys.own(lease.run_id, lease.task_id)
        meta_key = ctx.keys.log_meta(lease.run_id, lease.task_id, lease.attempt)
        found, _ = ctx.client.read_many([own_key, meta_key])
        own = found.get(own_key)
        if not owns(own, lease):
            raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
        b = flow.Batch(compares=[c.created_at(own_key, claim_revision(lease.token))])
        log_ops(ctx, b, lease, data, found.get(meta_key))
        if ctx.client.txn(b.compares, b.ops, "append log").succeeded:
            seen = ctx.claimed.get(lease.token)
            if seen is not None:
                seen.pop(meta_key, None)  # changed: a finish reads it again
            return
    raise errors.StoreError(f"append_log {lease.run_id}/{lease.task_id}: too much contention")


# ---------------------------------------------------------------------- finish and loss


def complete(
    b: flow.Batch, keys: Keys, run_item: c.Item, run: Rec, rec: Rec, state: TaskState
) -> bool:
    """A task became terminal: markers, failFast; True when its successors need advancing."""
    has_succ = flow.terminal(b, keys, run["id"], rec, state)
    allow = bool(rec["spec"].get("allowFailure"))
    if (
        run.get("fail_fast")
        and transitions.counts_as_failure(state, allow)
        and not run.get("halted")
    ):
        run["halted"] = True
        b.put(run_item.key, run)
        b.put(keys.ending(run["id"]), b"failFast")
    return has_succ


def decide_outcome(
    spec: TaskSpec, rec: Rec, run: Rec, outcome: Outcome
) -> tuple[TaskState, float | None]:
    """The task's next state and, for a retry, its backoff."""
    if RunState(run["state"]).terminal or outcome.reason is Reason.CANCELLED:
        return TaskState.CANCELLED, None
    if outcome.succeeded:
        return TaskState.SUCCEEDED, None
    failed = 1 + sum(1 for a in rec["attempts"][:-1] if a["state"] == AttemptState.FAILED.value)
    delay = transitions.retry_delay(spec, failed, outcome.reason)
    return (TaskState.RETRYING, delay) if delay is not None else (TaskState.FAILED, None)


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
    rec, run = loads(task.value), loads(run_item.value)
    b = flow.Batch()
    b.guard(held.key, held.mod)
    b.guard(task.key, task.mod)
    b.guard(run_key, run_item.mod)
    b.compares.append(c.created_at(own_key, 0 if own is None else own.create))
    attempt = rec["attempts"][-1]
    attempt.update(state=AttemptState.LOST.value, reason=Reason.LOST.value, finished_at=now)
    attempt["token"] = attempt["token"] or token_of(task.mod, int(attempt.get("slot", 0)))
    rec["losses"] = int(rec.get("losses", 0)) + int(counted)
    if RunState(run["state"]).terminal:
        needs = complete(b, keys, run_item, run, rec, TaskState.CANCELLED)
    elif rec["losses"] >= MAX_LOSSES:
        needs = complete(b, keys, run_item, run, rec, TaskState.FAILED)
    else:
        needs = False
        flow.enqueue(b, keys, run_id, rec, now=now)
    if needs:
        b.put(keys.prop(run_id, task_id), b"1")
    b.put(task.key, rec)
    b.delete(held.key)
    for name, _ in cluster.spec_locks(rec["spec"]):  # the lost attempt's locks are free
        b.delete(cluster.lock_key(keys, name, run_id, task_id))
    if own is not None:
        b.delete(own_key)
    return (
        (run_id, task_id) if ctx.client.txn(b.compares, b.ops, "lose attempt").succeeded else None
    )
