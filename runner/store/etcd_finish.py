"""Finish an attempt on etcd: one transaction fenced by the ownership key's create revision.

It records the attempt, the task's new state, outputs and log tail, removes the ownership
key, advances up to PER_TXN successors inline (comparing the successors' revisions it knows,
so two predecessors finishing together queue their join exactly once) and counts the run's
terminal tasks, so only the finish that completes a run spends a second transaction ending it.
Larger fan-outs and skip cascades go through a `prop/` marker drained right after the commit.

What the transaction compares is usually known without a read: the claim that made the token
left the records it wrote (and the successors it read) in `Ctx.claimed`. When a compare fails,
the transaction's failure branch returns the current values, so a retry needs no extra read.
"""

from __future__ import annotations

from runner import errors
from runner.models import AttemptState, Lease, Outcome, Reason, TaskSpec, TaskState
from runner.store import etcd_client as c
from runner.store import etcd_cluster as cluster
from runner.store import etcd_flow as flow
from runner.store import etcd_handoff as handoff
from runner.store import etcd_logs
from runner.store.etcd_keys import claim_revision, dumps, loads
from runner.store.etcd_work import Ctx, Seen, append_log, complete, decide_outcome, log_ops, owns

_ATTEMPT_STATE = {
    TaskState.SUCCEEDED: AttemptState.SUCCEEDED,
    TaskState.CANCELLED: AttemptState.CANCELLED,
}
_RECORDED = {s.value for s in AttemptState} - {AttemptState.RUNNING.value, AttemptState.LOST.value}


def finish(
    ctx: Ctx, lease: Lease, outcome: Outcome, *, now: float, taker: handoff.Taker | None = None
) -> tuple[bool, list[Lease]]:
    """Record how an attempt ended (see Store.finish). Returns whether it queued tasks, and
    the lease of a successor it handed to `taker` (see `etcd_handoff`). Raises LeaseLost on
    a stale token, except on a retry after this object's earlier finish of the token failed
    ambiguously (its reply lost) and the record shows that it committed: that retry succeeds
    (and returns the successor that finish handed over, if any)."""
    tail = outcome.log_tail.encode()
    if len(tail) > etcd_logs.CHUNK:
        append_log(ctx, lease, outcome.log_tail)  # fenced too; keeps the finish txn small
        tail = b""
    seen = ctx.claimed.pop(lease.token, None) or {}
    for _ in range(200):
        seen = _complete_reads(ctx, lease, tail, seen)
        try:
            result = _finish_once(ctx, lease, outcome, tail, seen, now=now, taker=taker)
        except errors.LeaseLost:
            ctx.uncertain.discard(lease.token)
            raise
        if isinstance(result, dict):
            seen = result  # a conflict: the current values, from the failure branch
            continue
        tripped, props, ended, queued, leases = result
        ctx.uncertain.discard(lease.token)
        ctx.failpoints.hit("finish.after_commit")
        if tripped:  # this finish tripped failFast
            flow.cancel_unstarted(ctx.client, ctx.keys, lease.run_id)
        if props:
            flow.drain(ctx.client, ctx.keys, lease.run_id, now=now)
        if ended or props or tripped:
            flow.maybe_end(ctx.client, ctx.keys, lease.run_id, now=now)
        return queued, leases
    raise errors.StoreError(f"finish {lease.run_id}/{lease.task_id}: too much contention")


def _needed(ctx: Ctx, lease: Lease, tail: bytes, rec: flow.Rec | None) -> list[str]:
    """The keys a finish of `lease` compares: ownership, task, run, log meta, successors."""
    keys, run_id, task_id = ctx.keys, lease.run_id, lease.task_id
    out = [keys.own(run_id, task_id), keys.task(run_id, task_id), keys.run(run_id)]
    if tail:
        out.append(keys.log_meta(run_id, task_id, lease.attempt))
    succ = [] if rec is None else flow.narrow_succ(rec)
    if len(succ) <= flow.PER_TXN:
        out.extend(keys.task(run_id, s) for s in succ)
    return out


def _complete_reads(ctx: Ctx, lease: Lease, tail: bytes, seen: Seen) -> Seen:
    """`seen` with every needed key known (read in one round trip when some are not)."""
    task = seen.get(ctx.keys.task(lease.run_id, lease.task_id))
    for _ in range(2):  # the successors are known once the task record is
        rec = None if task is None else loads(task.value)
        missing = [k for k in _needed(ctx, lease, tail, rec) if k not in seen]
        if not missing:
            return seen
        found, _ = ctx.client.read_many(missing)
        seen = {**seen, **{k: found.get(k) for k in missing}}
        task = seen.get(ctx.keys.task(lease.run_id, lease.task_id))
    return seen


def _finish_once(
    ctx: Ctx, lease: Lease, outcome: Outcome, tail: bytes, seen: Seen, *, now: float,
    taker: handoff.Taker | None,
) -> tuple[bool, bool, bool, bool, list[Lease]] | Seen:  # fmt: skip
    """One decide-commit round: the current values on a conflict, else (failFast tripped,
    `prop/` or `join/` markers written, every task of the run terminal, tasks queued, the
    lease of a successor handed over)."""
    keys, run_id, task_id = ctx.keys, lease.run_id, lease.task_id
    own_key, task_key, run_key = (
        keys.own(run_id, task_id),
        keys.task(run_id, task_id),
        keys.run(run_id),
    )
    own, task, run_item = seen.get(own_key), seen.get(task_key), seen.get(run_key)
    if not owns(own, lease) or task is None or run_item is None:
        if lease.token in ctx.uncertain and _recorded(task, lease):
            # an earlier call committed: its follow-up remains, and its hand-off
            assert task is not None
            rec = loads(task.value)
            return False, True, True, False, handoff.recover(ctx, lease.token, run_id, rec, taker)
        raise errors.LeaseLost(run_id, task_id, lease.attempt)
    rec, run = loads(task.value), loads(run_item.value)
    halted = bool(run.get("halted"))
    b = flow.Batch(compares=[c.created_at(own_key, claim_revision(lease.token))])
    b.guard(task_key, task.mod)
    b.guard(run_key, run_item.mod)
    spec = TaskSpec.from_dict(rec["spec"])
    needed = _needed(ctx, lease, tail, rec)
    _record_attempt(rec, lease, outcome, now=now)
    state, delay = decide_outcome(spec, rec, run, outcome)
    rec["attempts"][-1]["state"] = _ATTEMPT_STATE.get(state, AttemptState.FAILED).value
    if delay is not None:
        flow.enqueue(b, keys, run_id, rec, now=now, not_before=now + delay)
    queued: list[tuple[c.Item, flow.Rec]] = []
    if delay is None and complete(b, keys, run_item, run, rec, state):
        queued = _successors(ctx, b, run, task_id, rec, seen, now=now)
    if tail:
        meta_key = keys.log_meta(run_id, task_id, lease.attempt)
        log_ops(ctx, b, lease, tail, seen.get(meta_key))
    b.put(task_key, rec)
    b.delete(own_key)
    b.delete(keys.held(lease.worker_id, run_id, task_id))
    for name, _ in cluster.spec_locks(rec["spec"]):  # release the attempt's locks
        b.delete(cluster.lock_key(keys, name, run_id, task_id))
    props = any(op.request_put.key.startswith(keys.prop().encode()) for op in b.ops)
    handed = handoff.prepare(ctx, b, taker, lease.token, run_item, queued, now=now)
    b.ops.append(c.count(keys.done(run_id, "")))
    ctx.failpoints.hit("finish.before_commit")
    try:
        res = ctx.client.txn(b.compares, b.ops, "finish", failure=[c.get(k) for k in needed])
    except errors.StoreError:
        ctx.uncertain.add(lease.token)  # it may have committed: a retry checks the record
        raise
    if not res.succeeded:
        fresh = {i.key: i for i in c.items_of(res.responses)}
        return {k: fresh.get(k) for k in needed}
    done = int(res.responses[-1].response_range.count)
    joined = flow.joined(b, list(res.responses))  # a wide successor to decide (and queue)
    props = props or joined
    tripped = bool(run.get("halted")) and not halted
    leases = handoff.taken(ctx, handed, list(res.responses), res.revision)
    left = [q for q in queued if not leases or handed is None or q[0].key != handed.pick.task.key]
    if left and not tripped and not ctx.ahead:
        _expect(ctx, left, run_item, res.revision)
    return tripped, props, done >= int(run["tasks_total"]), bool(queued) or joined, leases


def _expect(ctx: Ctx, queued: list[tuple[c.Item, flow.Rec]], run_item: c.Item, rev: int) -> None:
    """The successors this finish queued, as the entries its store object's next claim
    expects at the queue head (that claim compares that nothing lies before them)."""
    out = []
    for item, rec in queued:
        if rec["state"] != TaskState.READY.value or not rec.get("qkey"):
            continue
        value = dumps({"nb": 0.0, "sel": rec["spec"].get("selector") or {}})
        entry = c.Item(rec["qkey"], value, rev, rev, 0)
        out.append((entry, c.Item(item.key, dumps(rec), item.create, rev, 0), run_item))
    ctx.ahead = sorted(out, key=lambda e: e[0].key)
    ids = (ctx.keys.split(e[0].key, "queue")[3:5] for e in ctx.ahead)
    ctx.guess = [(r, t) for r, t in ids]


def _recorded(task: c.Item | None, lease: Lease) -> bool:
    """The task's record already holds this token's result (a finish whose reply was lost)."""
    if task is None:
        return False
    attempts = loads(task.value).get("attempts", [])
    if len(attempts) < lease.attempt:
        return False
    a = attempts[lease.attempt - 1]
    return int(a.get("token") or 0) == lease.token and a.get("state") in _RECORDED


def _record_attempt(rec: flow.Rec, lease: Lease, outcome: Outcome, *, now: float) -> None:
    attempt = rec["attempts"][-1]
    if int(attempt["number"]) != lease.attempt:
        raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
    reason = (
        outcome.reason
        if not outcome.succeeded or outcome.reason is not Reason.EXIT
        else Reason.EXIT
    )
    attempt.update(
        token=lease.token,
        exit_code=outcome.exit_code,
        reason=reason.value,
        error=outcome.error,
        finished_at=now,
    )
    rec["outputs"] = dict(outcome.outputs)


def _successors(
    ctx: Ctx, b: flow.Batch, run: flow.Rec, task_id: str, rec: flow.Rec, seen: Seen, *,
    now: float,
) -> list[tuple[c.Item, flow.Rec]]:  # fmt: skip
    """Advance a few successors in this transaction (returned, as written); many, through a
    `prop/` marker."""
    if len(rec.get("succ", [])) > flow.PER_TXN:
        b.put(ctx.keys.prop(run["id"], task_id), b"1")
        return []
    flow.arrive(b, ctx.keys, run["id"], rec)  # at its wide successors
    succs = {
        s: (item, loads(item.value))
        for s in flow.narrow_succ(rec)
        if (item := seen.get(ctx.keys.task(run["id"], s))) is not None
    }
    deps = flow.dep_reader(
        ctx.client, ctx.keys, run["id"], flow.freed_deps(task_id, succs), known={task_id: rec}
    )
    flow.advance(b, ctx.keys, run, task_id, succs, deps, now=now)
    return list(succs.values())
