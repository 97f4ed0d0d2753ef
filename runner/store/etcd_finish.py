"""Finish an attempt on etcd: one transaction fenced by the ownership key's create revision.

It records the attempt, the task's new state, outputs and log tail, removes the ownership
key, and advances up to PER_TXN successors inline (comparing the successors' revisions it read,
so two predecessors finishing together queue their join exactly once); larger fan-outs and
skip cascades go through a `prop/` marker drained right after the commit.
"""

from __future__ import annotations

from runner import errors
from runner.models import AttemptState, Lease, Outcome, Reason, TaskSpec, TaskState
from runner.store import etcd_client as c
from runner.store import etcd_flow as flow
from runner.store import etcd_logs
from runner.store.etcd_keys import claim_revision, loads
from runner.store.etcd_work import Ctx, append_log, complete, decide_outcome, log_ops, owns

_ATTEMPT_STATE = {
    TaskState.SUCCEEDED: AttemptState.SUCCEEDED,
    TaskState.CANCELLED: AttemptState.CANCELLED,
}


def finish(ctx: Ctx, lease: Lease, outcome: Outcome, *, now: float) -> None:
    """Record how an attempt ended (see Store.finish). Raises LeaseLost on a stale token."""
    tail = outcome.log_tail.encode()
    if len(tail) > etcd_logs.CHUNK:
        append_log(ctx, lease, outcome.log_tail)  # fenced too; keeps the finish txn small
        tail = b""
    for _ in range(200):
        done = _finish_once(ctx, lease, outcome, tail, now=now)
        if done is not None:
            ctx.failpoints.hit("finish.after_commit")
            if done:  # this finish tripped failFast
                flow.cancel_unstarted(ctx.client, ctx.keys, lease.run_id)
            flow.drain(ctx.client, ctx.keys, lease.run_id, now=now)
            flow.maybe_end(ctx.client, ctx.keys, lease.run_id, now=now)
            return
    raise errors.StoreError(f"finish {lease.run_id}/{lease.task_id}: too much contention")


def _finish_once(
    ctx: Ctx, lease: Lease, outcome: Outcome, tail: bytes, *, now: float
) -> bool | None:
    """One read-decide-commit round: None on a conflict, else whether failFast tripped."""
    keys, run_id, task_id = ctx.keys, lease.run_id, lease.task_id
    own_key, task_key, run_key = (
        keys.own(run_id, task_id),
        keys.task(run_id, task_id),
        keys.run(run_id),
    )
    meta_key = keys.log_meta(run_id, task_id, lease.attempt)
    found, _ = ctx.client.read_many([own_key, task_key, run_key, meta_key])
    own, task, run_item = found.get(own_key), found.get(task_key), found.get(run_key)
    if not owns(own, lease) or task is None or run_item is None:
        raise errors.LeaseLost(run_id, task_id, lease.attempt)
    rec, run = loads(task.value), loads(run_item.value)
    halted = bool(run.get("halted"))
    b = flow.Batch(compares=[c.created_at(own_key, claim_revision(lease.token))])
    b.guard(task_key, task.mod)
    b.guard(run_key, run_item.mod)
    spec = TaskSpec.from_dict(rec["spec"])
    _record_attempt(rec, lease, outcome, now=now)
    state, delay = decide_outcome(spec, rec, run, outcome)
    rec["attempts"][-1]["state"] = _ATTEMPT_STATE.get(state, AttemptState.FAILED).value
    if delay is not None:
        flow.enqueue(b, keys, run_id, rec, now=now, not_before=now + delay)
    elif complete(b, keys, run_item, run, rec, state):
        _successors(ctx, b, run, task_id, rec, now=now)
    if tail:
        log_ops(ctx, b, lease, tail, found.get(meta_key))
    b.put(task_key, rec)
    b.delete(own_key)
    b.delete(keys.held(lease.worker_id, run_id, task_id))
    ctx.failpoints.hit("finish.before_commit")
    if not ctx.client.txn(b.compares, b.ops, "finish").succeeded:
        return None
    return bool(run.get("halted")) and not halted


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
    ctx: Ctx, b: flow.Batch, run: flow.Rec, task_id: str, rec: flow.Rec, *, now: float
) -> None:
    """Advance a few successors in this transaction; many, through a `prop/` marker."""
    succ = rec.get("succ", [])
    if len(succ) > flow.PER_TXN:
        b.put(ctx.keys.prop(run["id"], task_id), b"1")
        return
    succs = flow.read_tasks(ctx.client, ctx.keys, run["id"], succ)
    deps = flow.dep_reader(
        ctx.client, ctx.keys, run["id"], flow.freed_deps(task_id, succs), known={task_id: rec}
    )
    flow.advance(b, ctx.keys, run, task_id, succs, deps, now=now)
