"""Claim, finish and lose attempts on etcd, each committed by one compare-and-set transaction.

A claim compares the queue entry, the task record and the run record it read, and that no
ownership key exists; it deletes the entry and creates the ownership key on the worker's lease.
The fencing token is that key's create revision (= the claim's revision), shifted left 8 bits
plus the task's slot in the transaction, so a batch claim still gives every attempt its own
token. A finish compares the ownership key's create revision and slot with the token, so a
stale worker records nothing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from runner import errors, transitions
from runner.failpoints import Failpoints
from runner.models import (
    AttemptState,
    Lease,
    Outcome,
    Reason,
    RunContext,
    RunState,
    TaskSpec,
    TaskState,
)
from runner.store import etcd_client as c
from runner.store import etcd_flow as flow
from runner.store import etcd_logs
from runner.store.base import MAX_LOSSES
from runner.store.etcd_keys import Keys, claim_revision, dumps, loads, token_of

Rec = dict[str, Any]
Seen = dict[str, c.Item | None]  # key -> its item as last known (None: absent)
MAX_OPS = 120  # operations per transaction, under etcd's 128
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
    # tokens whose finish transaction failed without an answer (it may have committed)
    uncertain: set[int] = field(default_factory=set)

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


# ---------------------------------------------------------------------- claim


def claim(
    ctx: Ctx, worker_id: str, lease_id: int, *, now: float, limit: int, labels: Any
) -> list[Lease]:
    """Take up to `limit` ready tasks in one transaction; on a conflict with another worker,
    read again and pick at a random offset within the highest priority (no head-key race)."""
    for rnd in range(20):
        picks, runs = _candidates(ctx, now=now, labels=labels, want=limit, spread=rnd > 0)
        if not picks:
            return []
        leases = _commit_claim(ctx, worker_id, lease_id, picks[: min(limit, 25)], runs, now=now)
        if leases:
            return leases
    return []


def _candidates(
    ctx: Ctx, *, now: float, labels: Any, want: int, spread: bool
) -> tuple[list[Pick], dict[str, c.Item]]:
    """Up to `want` claimable queue entries with their task records, and their open runs.
    Only the records of the entries it picks are read (speculatively the first `want` due
    ones, with the runs, in one round trip)."""
    window = max(32, 8 * want) if spread else max(8, 4 * want)
    entries, found = _read_head(ctx, window, [] if spread else ctx.guess[:want])
    due = [e for e in entries if _due(e, now, labels)]
    if spread and due:
        tier = ctx.keys.split(due[0].key, "queue")[0]
        top = [e for e in due if ctx.keys.split(e.key, "queue")[0] == tier]
        k = random.randrange(len(top))
        due = top[k:] + top[:k] + due[len(top) :]
    ids = [ctx.keys.split(e.key, "queue")[3:5] for e in due]
    run_keys = list(dict.fromkeys(ctx.keys.run(r) for r, _ in ids))
    wanted = [*run_keys, *(ctx.keys.task(r, t) for r, t in ids[:want])]
    if any(k not in found for k in wanted):  # the guess missed: one more round trip
        found.update(ctx.client.read_many(k for k in wanted if k not in found)[0])
    open_runs = {
        k: found[k] for k in run_keys if k in found and _claimable_run(loads(found[k].value))
    }
    chosen = _within_limits(ctx, due, ids, open_runs, want)
    taken = {e.key for e, _ in chosen}
    ctx.guess = [(r, t) for e, (r, t) in zip(due, ids, strict=True) if e.key not in taken][:32]
    missing = [k for _, k in chosen if k not in found]
    if missing:  # entries further down, behind runs at their parallelism
        found.update(ctx.client.read_many(missing)[0])
    picks: list[Pick] = []
    for entry, task_key in chosen:
        item = found.get(task_key)
        rec = None if item is None else loads(item.value)
        if item is None or rec is None or rec.get("qkey") != entry.key:
            continue
        picks.append(Pick(entry, item, ctx.keys.split(entry.key, "queue")[3], rec))
    return picks, open_runs


def _read_head(
    ctx: Ctx, window: int, guess: list[tuple[str, str]]
) -> tuple[list[c.Item], dict[str, c.Item]]:
    """The queue head and, in the same round trip, the run and task records of the entries
    guessed to be next (those after the last claim's picks: right for a lone worker)."""
    keys = ctx.keys
    reads = [*dict.fromkeys(keys.run(r) for r, _ in guess), *(keys.task(r, t) for r, t in guess)]
    responses, _ = ctx.client.reads(
        [c.head(keys.queue(), window), *(c.get(k) for k in reads)], "claim candidates"
    )
    return c.items_of(responses[:1]), {i.key: i for i in c.items_of(responses[1:])}


def _within_limits(
    ctx: Ctx, due: list[c.Item], ids: list[list[str]], open_runs: dict[str, c.Item], want: int
) -> list[tuple[c.Item, str]]:
    """The first `want` entries of open runs with room under their parallelism."""
    room = _room(ctx, open_runs)
    chosen: list[tuple[c.Item, str]] = []
    for entry, (run_id, task_id) in zip(due, ids, strict=True):
        if len(chosen) >= want:
            break
        if ctx.keys.run(run_id) not in open_runs:
            continue
        if run_id in room:
            if room[run_id] <= 0:
                continue
            room[run_id] -= 1
        chosen.append((entry, ctx.keys.task(run_id, task_id)))
    return chosen


def _due(entry: c.Item, now: float, labels: Any) -> bool:
    value = loads(entry.value)
    return float(value.get("nb", 0)) <= now and transitions.selector_matches(
        value.get("sel") or {}, labels
    )


def _claimable_run(run: Rec) -> bool:
    return not RunState(run["state"]).terminal and not run.get("halted")


def _room(ctx: Ctx, runs: dict[str, c.Item]) -> dict[str, int]:
    """Free parallelism slots of the runs that have a limit (the rest are unlimited)."""
    limited = [r for r in (loads(i.value) for i in runs.values()) if r.get("parallelism")]
    counts = ctx.client.counts([ctx.keys.own(r["id"], "") for r in limited])
    return {r["id"]: int(r["parallelism"]) - n for r, n in zip(limited, counts, strict=True)}


def _commit_claim(
    ctx: Ctx,
    worker_id: str,
    lease_id: int,
    picks: list[Pick],
    runs: dict[str, c.Item],
    *,
    now: float,
) -> list[Lease]:
    keys, b = ctx.keys, flow.Batch()
    nonce = uuid.uuid4().hex
    after = _guard_runs(ctx, b, picks, runs, now=now)
    for slot, p in enumerate(picks):
        _claim_ops(b, keys, p, worker_id, lease_id, nonce, slot, now=now)
    succ_keys = _succ_keys(keys, picks, room=MAX_OPS - len(b.ops))
    b.ops.extend(c.get(k) for k in succ_keys)  # for the finishes: no read before them
    ctx.failpoints.hit("claim.before_commit")
    try:
        res = ctx.client.txn(b.compares, b.ops, "claim")
    except c.LeaseMissing:
        raise _worker_lost(worker_id) from None
    except errors.StoreUnavailable:
        token = _claimed_anyway(ctx, picks, nonce)
        if not token:
            raise
        return _leases(ctx, picks, runs, worker_id, token)
    if not res.succeeded:
        return []
    ctx.failpoints.hit("claim.after_commit")
    found = {i.key: i for i in c.items_of(res.responses)}
    for slot, p in enumerate(picks):
        _remember(ctx, p, slot, res.revision, after, {k: found.get(k) for k in succ_keys})
    return _leases(ctx, picks, runs, worker_id, res.revision)


def _guard_runs(
    ctx: Ctx, b: flow.Batch, picks: list[Pick], runs: dict[str, c.Item], *, now: float
) -> dict[str, c.Item]:
    """Compare the picks' run records (and parallelism); start pending runs. Returns the run
    records as the claim leaves them (mod 0: written by the claim)."""
    after: dict[str, c.Item] = {}
    for run_key, item in runs.items():
        run = loads(item.value)
        if not any(p.run_id == run["id"] for p in picks):
            continue
        b.guard(run_key, item.mod)
        after[run_key] = item
        if run.get("parallelism"):
            b.compares.append(c.unchanged_since(ctx.keys.own(run["id"], ""), ctx.client.revision))
        if run["state"] == RunState.PENDING.value:
            run.update(state=RunState.RUNNING.value, started_at=now)
            b.put(run_key, run)
            after[run_key] = c.Item(run_key, dumps(run), item.create, 0, 0)
    return after


def _succ_keys(keys: Keys, picks: list[Pick], *, room: int) -> list[str]:
    """The successor records the picks' finishes will compare, as many as fit in `room`."""
    out: list[str] = []
    for p in picks:
        succ = p.rec.get("succ", [])
        if len(succ) <= flow.PER_TXN and len(out) + len(succ) <= room:
            out.extend(keys.task(p.run_id, s) for s in succ)
    return out


def _remember(
    ctx: Ctx, p: Pick, slot: int, rev: int, after: dict[str, c.Item], succs: Seen
) -> None:
    """Keep what the claim wrote, for the finish of this attempt."""
    keys, task_id = ctx.keys, p.rec["spec"]["id"]
    run_key, own_key = keys.run(p.run_id), keys.own(p.run_id, task_id)
    run = after[run_key]
    number = len(p.rec["attempts"])
    seen: Seen = {
        own_key: c.Item(own_key, dumps({"slot": slot}), rev, rev, 0),
        p.task.key: c.Item(p.task.key, dumps(p.rec), p.task.create, rev, 0),
        run_key: c.Item(run_key, run.value, run.create, run.mod or rev, 0),
        keys.log_meta(p.run_id, task_id, number): None,
    }
    for s in p.rec.get("succ", []):
        if (k := keys.task(p.run_id, s)) in succs:
            seen[k] = succs[k]
    ctx.remember(token_of(rev, slot), seen)


def _claim_ops(
    b: flow.Batch, keys: Keys, p: Pick, worker_id: str, lease_id: int, nonce: str, slot: int,
    *, now: float,
) -> None:  # fmt: skip
    task_id = p.rec["spec"]["id"]
    number = len(p.rec.get("attempts", [])) + 1
    b.guard(p.entry.key, p.entry.mod)
    b.guard(p.task.key, p.task.mod)
    b.compares.append(c.created_at(keys.own(p.run_id, task_id), 0))
    b.delete(p.entry.key)
    p.rec.pop("qkey", None)
    p.rec.update(state=TaskState.RUNNING.value, waiting_reason=None)
    p.rec.setdefault("attempts", []).append(
        {
            "number": number,
            "state": "running",
            "worker": worker_id,
            "token": 0,
            "slot": slot,
            "started_at": now,
        }
    )
    owner = {"worker": worker_id, "attempt": number, "nonce": nonce, "slot": slot}
    b.put(keys.own(p.run_id, task_id), owner, lease_id)
    b.put(keys.held(worker_id, p.run_id, task_id), {"attempt": number})
    b.put(p.task.key, p.rec)


def _claimed_anyway(ctx: Ctx, picks: list[Pick], nonce: str) -> int:
    """After an ambiguous failure: the claim's revision if it committed after all (its
    ownership keys carry `nonce`), else 0."""
    key = ctx.keys.own(picks[0].run_id, picks[0].rec["spec"]["id"])
    try:
        own = ctx.client.get(key)
    except errors.StoreError:
        return 0
    if own is None or loads(own.value).get("nonce") != nonce:
        return 0
    return own.create  # picks[0] has slot 0


def _leases(
    ctx: Ctx, picks: list[Pick], runs: dict[str, c.Item], worker_id: str, token: int
) -> list[Lease]:
    refs = {(p.run_id, r) for p in picks for r in p.rec.get("refs", [])}
    found, _ = ctx.client.read_many(ctx.keys.task(r, t) for r, t in refs)
    out: list[Lease] = []
    for slot, p in enumerate(picks):
        run = loads(runs[ctx.keys.run(p.run_id)].value)
        outputs = {
            r: dict(loads(found[k].value).get("outputs") or {})
            for r in p.rec.get("refs", [])
            if (k := ctx.keys.task(p.run_id, r)) in found
        }
        context = RunContext(
            run_id=p.run_id,
            scheduled_time=run.get("scheduled_time"),
            params=dict(run.get("params") or {}),
            outputs=outputs,
        )
        out.append(
            Lease(
                run_id=p.run_id,
                task_id=p.rec["spec"]["id"],
                attempt=len(p.rec["attempts"]),
                token=token_of(token, slot),
                worker_id=worker_id,
                spec=TaskSpec.from_dict(p.rec["spec"]),
                context=context,
            )
        )
    return out


def owns(own: c.Item | None, lease: Lease) -> bool:
    """The ownership key still carries the lease's token (create revision and slot)."""
    if own is None or own.create != claim_revision(lease.token):
        return False
    return token_of(own.create, int(loads(own.value).get("slot", 0))) == lease.token


def _worker_lost(worker_id: str) -> errors.LeaseLost:
    err = errors.LeaseLost("", "", 0)
    err.args = (f"worker {worker_id}: its lease expired; stop its tasks and register",)
    return err


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
    if own is not None:
        b.delete(own_key)
    return (
        (run_id, task_id) if ctx.client.txn(b.compares, b.ops, "lose attempt").succeeded else None
    )
