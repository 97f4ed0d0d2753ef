"""Finish an attempt on etcd: one transaction fenced by the ownership key's create revision.

It records the attempt, the task's new state, outputs and log tail, removes the ownership
key, advances up to PER_TXN successors inline (comparing the successors' revisions it knows,
so two predecessors finishing together queue their join exactly once) and counts the run's
terminal tasks, so only the finish that completes a run spends a second transaction ending it.
The count is the run's tally (`flow.count_done`: at most 256 keys whose versions count the
`done/` markers; a count of the `done/` range itself visits all of it, etcd 3.4). A request of
several finishes reads it once per run, after them all, and not at all while a *witness*
holds: another task of the run this store object claimed and has not finished still owned, or
any other ownership key of the run (another worker's running task; see `_tally`).
Larger fan-outs and skip cascades go through a `prop/` marker drained right after the commit.

What the transaction compares is usually known without a read: the claim that made the token
left the records it wrote (and the successors it read) in `Ctx.claimed`. When a compare fails,
the transaction's failure branch returns the current values, so a retry needs no extra read.

`finish_many` (a worker's recorder, with prefetch) nests several attempts' transactions, each
whole, in one request, and sends the finishes that cannot share one (`_Layers`) in requests of
their own, all at once.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import errors, interrupts
from runner.models import AttemptState, Lease, Outcome, Reason, TaskKey, TaskState
from runner.store.etcd import claim as claim_mod
from runner.store.etcd import client as c
from runner.store.etcd import cluster, flow, handoff, logs
from runner.store.etcd.context import MAX_OPS, Ctx, Seen, owns
from runner.store.etcd.records import (
    QueueEntry,
    RunRec,
    TaskRec,
    claim_revision,
    dumps,
    load_run,
    load_task,
)
from runner.store.etcd.runs import MAX_BYTES

logger = logging.getLogger(__name__)

_ATTEMPT_STATE = {
    TaskState.SUCCEEDED: AttemptState.SUCCEEDED,
    TaskState.CANCELLED: AttemptState.CANCELLED,
}
_RECORDED = {s.value for s in AttemptState} - {AttemptState.RUNNING.value, AttemptState.LOST.value}


def finish(
    ctx: Ctx,
    lease: Lease,
    outcome: Outcome,
    *,
    now: float,
    claim: int,
    labels: Mapping[str, str] | None,
) -> list[Lease]:
    """See Store.finish. With `claim`, the finish transaction itself hands the finishing
    worker a successor it made ready when nothing is ahead of it in the queue (see
    `handoff`); when it queued successors without handing one over, a claim transaction
    follows right after it, without waiting for the watch to report them. A finish that
    queued nothing claims nothing: the worker's claim loop claims for several slots in one
    transaction, where one claim per slot thread would race its siblings for the same head
    entries."""
    taker = handoff.taker(ctx, lease.worker_id, labels) if claim > 0 else None
    queued, leases = record(ctx, lease, outcome, now=now, taker=taker)
    if leases or claim <= 0 or not queued:
        return leases
    return _claim_after(ctx, lease.worker_id, now=now, limit=claim, labels=labels)


def finish_many(
    ctx: Ctx,
    done: Sequence[tuple[Lease, Outcome]],
    *,
    now: float,
    claim: int,
    labels: Mapping[str, str] | None,
) -> tuple[list[TaskKey], list[Lease]]:
    """See Store.finish_many: their transactions nested in one request (see
    `record_many`), then a claim as `finish` makes one."""
    worker_id = done[0][0].worker_id if done else ""
    taker = handoff.taker(ctx, worker_id, labels) if claim > 0 and done else None
    lost, queued, leases = record_many(ctx, done, now=now, taker=taker)
    if leases or claim <= 0 or not queued:
        return lost, leases
    return lost, _claim_after(ctx, worker_id, now=now, limit=claim, labels=labels)


def _claim_after(
    ctx: Ctx, worker_id: str, *, now: float, limit: int, labels: Mapping[str, str] | None
) -> list[Lease]:
    try:
        return claim_mod.claim(ctx, worker_id, now=now, limit=limit, labels=labels)
    except errors.StoreError as exc:  # LeaseLost too: the claim loop will find out
        logger.debug("claim after finish failed: %s", exc)
        return []


def record(
    ctx: Ctx, lease: Lease, outcome: Outcome, *, now: float, taker: handoff.Taker | None = None
) -> tuple[bool, list[Lease]]:
    """Record how an attempt ended. Returns whether it queued tasks, and
    the lease of a successor it handed to `taker` (see `handoff`). Raises LeaseLost on
    a stale token, except on a retry after this object's earlier finish of the token failed
    ambiguously (its reply lost) and the record shows that it committed: that retry succeeds
    (and returns the successor that finish handed over, if any)."""
    lost, queued, leases = record_many(ctx, [(lease, outcome)], now=now, taker=taker)
    if lost:
        raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
    return queued, leases


def record_many(
    ctx: Ctx,
    done: Sequence[tuple[Lease, Outcome]],
    *,
    now: float,
    taker: handoff.Taker | None = None,
) -> tuple[list[TaskKey], bool, list[Lease]]:
    """`record` for several attempts: their transactions nested in as few requests as their
    keys allow (`_Layers`), the requests sent together. Returns the attempts whose token
    was stale, whether any finish queued tasks, and the successors handed to `taker`."""
    work = [_Work.of(ctx, lease, outcome) for lease, outcome in done]
    out = _Outcomes()
    for _ in range(200):
        if not work:
            return out.lost, out.queued, out.leases
        layers = _decide(ctx, work, out, now=now, taker=taker)
        work = []
        for layer, (revision, answers, done_of) in zip(layers, _send_all(ctx, layers), strict=True):
            for (w, prep), (ok, responses) in zip(layer, answers, strict=True):
                if not ok:  # a conflict: the current values, from the failure branch
                    fresh = {i.key: i for i in c.items_of(responses)}
                    w.seen = {k: fresh.get(k) for k in prep.needed}
                    work.append(w)
                    continue
                ctx.uncertain.discard(w.lease.token)
                ctx.failpoints.hit("finish.after_commit")
                tally = done_of[w.lease.run_id]
                out.add(ctx, w.lease, _conclude(ctx, prep, responses, revision, tally), now=now)
    raise errors.StoreError(f"finish of {len(work)} attempt(s): too much contention")


@dataclass
class _Outcomes:
    lost: list[TaskKey] = field(default_factory=list)
    queued: bool = False
    leases: list[Lease] = field(default_factory=list)

    def add(self, ctx: Ctx, lease: Lease, r: _Result, *, now: float) -> None:
        """A committed finish: what follows it outside its transaction."""
        self.queued = self.queued or r.queued
        self.leases += r.leases
        if r.tripped:
            flow.cancel_unstarted(ctx.client, ctx.keys, lease.run_id)
        if r.props:
            flow.drain(ctx.client, ctx.keys, lease.run_id, now=now)
        if r.ended or r.props or r.tripped:
            flow.maybe_end(ctx.client, ctx.keys, lease.run_id, now=now)


def _decide(
    ctx: Ctx, work: list[_Work], out: _Outcomes, *, now: float, taker: handoff.Taker | None
) -> list[list[tuple[_Work, _Prepared]]]:
    """Decide each attempt's finish, in layers: one request each."""
    layers = _Layers()
    for w in work:
        w.seen = _complete_reads(ctx, w.lease, w.tail, w.seen)
        try:
            prep = _prepare(ctx, w, now=now, taker=taker)
        except errors.LeaseLost:
            ctx.uncertain.discard(w.lease.token)
            out.lost.append(w.lease.key)
            continue
        if isinstance(prep, list):  # an earlier, ambiguous call committed it
            ctx.uncertain.discard(w.lease.token)
            out.add(ctx, w.lease, _Result(False, True, True, False, prep), now=now)
            continue
        layers.place(w, prep)
    return layers.layers


class _Layers:
    """Finishes sorted into requests: a finish joins a request only if it writes nothing
    the request's others compare or write and compares nothing they write (so each decides
    on values no other one changes: etcd evaluates a request's compares before its writes,
    and rejects a key written twice in one request). Several finishes of one wide task's
    dependencies (each puts its counter, see `flow.arrive`) go to separate requests,
    which are sent together, as finishes from several workers would be."""

    def __init__(self) -> None:
        self.layers: list[list[tuple[_Work, _Prepared]]] = []
        self._keys: list[_Claimed] = []
        self._written: dict[bytes, int] = {}  # key -> the last layer that writes it
        self._read: dict[bytes, int] = {}  # key -> the last layer that compares it

    def place(self, w: _Work, prep: _Prepared) -> None:
        mine = prep.keys
        at = max(
            [self._written.get(k, -1) + 1 for k in mine.reads | mine.writes]
            + [self._read.get(k, -1) + 1 for k in mine.writes]
            + [0]
        )  # the first layer that may take it; ranges are checked by `take`
        while at < len(self.layers) and not self._keys[at].take(mine, len(self.layers[at])):
            at += 1
        if at == len(self.layers):
            self.layers.append([])
            self._keys.append(_Claimed())
            self._keys[at].take(mine, 0)
        self.layers[at].append((w, prep))
        for k in mine.writes:
            self._written[k] = max(self._written.get(k, -1), at)
        for k in mine.reads:
            self._read[k] = max(self._read.get(k, -1), at)


Answers = tuple[int, list[tuple[bool, list[Any]]], dict[str, int]]
"""A request's revision, each finish's (success, responses), and each run's `done/` count."""


def _send_all(ctx: Ctx, layers: list[list[tuple[_Work, _Prepared]]]) -> list[Answers]:
    """Send each layer's request, several at once. If any fails without an answer, every
    attempt is marked uncertain (a retry finds the committed ones by their records) and
    the error raised."""
    if len(layers) <= 1:
        return [_send(ctx, layer) for layer in layers]
    futures = [ctx.senders().submit(_send, ctx, layer) for layer in layers]
    results, error = [], None
    for f in futures:
        try:
            results.append(interrupts.result(f))
        except errors.StoreError as exc:
            error = error or exc
    if error is not None:
        ctx.uncertain.update(w.lease.token for layer in layers for w, _ in layer)
        raise error
    return results


def _send(ctx: Ctx, batch: list[tuple[_Work, _Prepared]]) -> Answers:
    """One request: a lone finish as the transaction itself, several nested in one; then
    the `done/` count of each run, which sees every finish before it."""
    ctx.failpoints.hit("finish.before_commit")
    runs = list(dict.fromkeys(w.lease.run_id for w, _ in batch))
    counts = [
        _tally(ctx, r, [w.lease.task_id for w, _ in batch if w.lease.run_id == r]) for r in runs
    ]
    try:
        if len(batch) == 1:
            ((_, prep),) = batch
            res = ctx.client.txn(prep.b.compares, [*prep.b.ops, *counts], "finish", prep.failure)
            done = _counted(res.responses[-1]) if res.succeeded else 0
            return res.revision, [(res.succeeded, list(res.responses))], {runs[0]: done}
        res = ctx.client.txn([], [*(prep.op for _, prep in batch), *counts], "finish")
    except errors.StoreError:
        for w, _ in batch:  # it may have committed: a retry checks the records
            ctx.uncertain.add(w.lease.token)
        raise
    nested, tallies = res.responses[: len(batch)], res.responses[len(batch) :]
    answers = [(r.response_txn.succeeded, list(r.response_txn.responses)) for r in nested]
    done_of = {r: _counted(t) for r, t in zip(runs, tallies, strict=True)}
    return res.revision, answers, done_of


WITNESS_SCAN = 64  # the most recent unfinished claims looked through for a witness
MAX_GAPS = 3  # finishes of one run per request whose own keys the range witnesses skip


def _tally(ctx: Ctx, run_id: str, finishing: list[str]) -> Any:
    """The op that counts run `run_id`'s terminal tasks after a request's finishes (of its
    tasks `finishing`) from its tally keys, nested under witnesses that the run has not
    ended, so the read is skipped while one holds: another unfinished task of the run this
    object holds (its ownership key still there), else any ownership key of the run other than
    those of `finishing` (another worker's running task; a request's compares see the keys as
    they were before its writes, so the finishing tasks' own keys are left out of the ranges)."""
    count = c.keys_in(ctx.keys.tally(run_id))
    if len(finishing) <= MAX_GAPS:
        for gap in reversed(_own_gaps(ctx, run_id, finishing)):
            count = c.nested([c.some_in(*gap)], [], [count])
    mine = ctx.keys.own(run_id, "")
    for seen in _recent_claims(ctx):
        for key, item in seen.items():
            if item is not None and key.startswith(mine):
                return c.nested([c.created_at(key, item.create)], [], [count])
    return count


def _recent_claims(ctx: Ctx) -> list[Seen]:
    """The records of this object's latest `WITNESS_SCAN` claims, newest first. A copy: the
    claim thread adds to `Ctx.claimed` while a recorder thread finishes (iterating the dict
    itself raised "dictionary changed size during iteration", which ended the recorder
    thread and left the worker's held tasks unfinished)."""
    while True:
        try:
            return list(itertools.islice(reversed(ctx.claimed.values()), WITNESS_SCAN))
        except RuntimeError:  # changed during the copy (made in C, under the GIL: rare)
            continue


def _own_gaps(ctx: Ctx, run_id: str, finishing: list[str]) -> list[tuple[str, str]]:
    """The ranges of the run's ownership keys between those of `finishing`."""
    keys = sorted(ctx.keys.own(run_id, t) for t in finishing)
    prefix = ctx.keys.own(run_id, "")
    starts = [prefix, *(k + "\0" for k in keys)]
    ends = [*keys, c.range_end(prefix).decode()]
    return list(zip(starts, ends, strict=True))


def _counted(response: Any) -> int:
    """A tally's answer: the run's terminal tasks, or -1 (not ended) when a witness held."""
    if response.WhichOneof("response") == "response_txn":
        txn = response.response_txn
        return -1 if txn.succeeded else _counted(txn.responses[0])
    return flow.tallied(response.response_range.kvs)


@dataclass
class _Work:
    """One attempt to finish, with what is known of the keys its transaction compares."""

    lease: Lease
    outcome: Outcome
    tail: bytes
    seen: Seen

    @classmethod
    def of(cls, ctx: Ctx, lease: Lease, outcome: Outcome) -> _Work:
        tail = outcome.log_tail.encode()
        if len(tail) > logs.CHUNK:
            logs.append_log(ctx, lease, outcome.log_tail)  # fenced too; keeps the finish txn small
            tail = b""
        return cls(lease, outcome, tail, ctx.claimed.pop(lease.token, {}))


class _Claimed:
    """The keys a request's nested transactions compare and write so far: a transaction
    joins only if it writes nothing the others compare or write, and compares nothing they
    write, so each one decides on values no other one changes (as if run one after another)."""

    def __init__(self) -> None:
        self.reads: set[bytes] = set()  # compared keys
        self.ranges: list[tuple[bytes, bytes]] = []  # compared ranges [start, end)
        self.writes: set[bytes] = set()
        self.runs: set[str] = set()  # each adds a count to the request
        self.size = 0

    def take(self, mine: _Claimed, count: int) -> bool:
        """Add a transaction's keys (`mine`, see `_Prepared.keys`) unless they conflict."""
        size = mine.size
        if count and (
            count + len(self.runs | mine.runs) >= MAX_OPS
            or self.size + size > MAX_BYTES
            or not self.writes.isdisjoint(mine.writes | mine.reads)
            or not mine.writes.isdisjoint(self.reads)
            or (self.ranges and any(_within(k, self.ranges) for k in mine.writes))
            or (mine.ranges and any(_within(k, mine.ranges) for k in self.writes))
        ):
            return False
        self.reads |= mine.reads
        self.ranges += mine.ranges
        self.writes |= mine.writes
        self.runs |= mine.runs
        self.size += size
        return True

    def add(self, op: Any) -> None:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            self.writes.add(op.request_put.key)
        elif kind == "request_delete_range":
            self.writes.add(op.request_delete_range.key)  # finishes delete single keys
        elif kind == "request_txn":
            txn = op.request_txn
            for cmp in txn.compare:
                if cmp.range_end:
                    self.ranges.append((cmp.key, cmp.range_end))
                else:
                    self.reads.add(cmp.key)
            for inner in (*txn.success, *txn.failure):
                self.add(inner)


def _within(key: bytes, ranges: list[tuple[bytes, bytes]]) -> bool:
    return any(start <= key and (key < end or end == b"\0") for start, end in ranges)


@dataclass
class _Result:
    tripped: bool  # this finish tripped failFast
    props: bool  # `prop/` or `join/` markers written
    ended: bool  # every task of the run is terminal
    queued: bool  # tasks queued
    leases: list[Lease]  # a successor handed over


def _needed(ctx: Ctx, lease: Lease, tail: bytes, rec: TaskRec | None) -> list[str]:
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
        rec = None if task is None else load_task(task.value)
        missing = [k for k in _needed(ctx, lease, tail, rec) if k not in seen]
        if not missing:
            return seen
        found, _ = ctx.client.read_many(missing)
        seen = {**seen, **{k: found.get(k) for k in missing}}
        task = seen.get(ctx.keys.task(lease.run_id, lease.task_id))
    return seen


@dataclass
class _Prepared:
    """A finish transaction, decided and not yet sent."""

    b: flow.Batch
    needed: list[str]  # what its failure branch reads back
    run: RunRec
    run_item: c.Item
    halted: bool  # the run was halted before
    queued: list[tuple[c.Item, TaskRec]]
    props: bool
    handed: handoff.Handoff | None

    @property
    def failure(self) -> list[Any]:
        return [c.get(k) for k in self.needed]

    @functools.cached_property
    def op(self) -> Any:
        return c.nested(self.b.compares, self.b.ops, self.failure)

    @functools.cached_property
    def keys(self) -> _Claimed:
        """The keys its transaction compares and writes, and its size."""
        mine = _Claimed()
        mine.add(self.op)
        mine.runs.add(self.run["id"])
        mine.size = self.op.ByteSize()
        return mine


def _prepare(
    ctx: Ctx, w: _Work, *, now: float, taker: handoff.Taker | None
) -> _Prepared | list[Lease]:
    """Decide one finish from `w.seen`; a list (the successor it handed over, if any) when an
    earlier call whose reply was lost committed it."""
    lease, outcome, tail, seen = w.lease, w.outcome, w.tail, w.seen
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
            return handoff.recover(ctx, lease.token, run_id, load_task(task.value), taker)
        raise errors.LeaseLost(run_id, task_id, lease.attempt)
    rec, run = load_task(task.value), load_run(run_item.value)
    halted = bool(run.get("halted"))
    b = flow.Batch(compares=[c.created_at(own_key, claim_revision(lease.token))])
    b.guard(task_key, task.mod)
    b.guard(run_key, run_item.mod)
    spec = lease.spec  # as claimed: a task's spec never changes
    needed = _needed(ctx, lease, tail, rec)
    _record_attempt(rec, lease, outcome, now=now)
    state, delay = flow.decide_outcome(spec, rec, run, outcome)
    rec["attempts"][-1]["state"] = _ATTEMPT_STATE.get(state, AttemptState.FAILED).value
    if delay is not None:
        # from the latest live clock: a later one must not see the backoff cut
        flow.enqueue(b, keys, run_id, rec, now=now, not_before=now + ctx.clocks.ahead + delay)
    queued: list[tuple[c.Item, TaskRec]] = []
    if delay is None and flow.complete(b, keys, run_item, run, rec, state):
        queued = _successors(ctx, b, run, task_id, rec, seen, now=now)
    if tail:
        meta_key = keys.log_meta(run_id, task_id, lease.attempt)
        logs.log_ops(ctx, b, lease, tail, seen.get(meta_key))
    b.put(task_key, rec)
    b.delete(own_key)
    b.delete(keys.held(lease.worker_id, run_id, task_id))
    for name, _ in cluster.spec_locks(rec["spec"]):  # release the attempt's locks
        b.delete(keys.lock_key(name, run_id, task_id))
    marked = (keys.prop().encode(), keys.gate().encode())  # drained after the commit
    props = any(op.request_put.key.startswith(marked) for op in b.ops)
    handed = handoff.prepare(ctx, b, taker, lease.token, run_item, queued, now=now)
    return _Prepared(b, needed, run, run_item, halted, queued, props, handed)


def _conclude(ctx: Ctx, p: _Prepared, responses: list[Any], revision: int, done: int) -> _Result:
    """What a committed finish did, from its responses and its run's `done/` count."""
    joined = flow.joined(p.b, responses)  # a wide successor to decide (and queue)
    tripped = bool(p.run.get("halted")) and not p.halted
    leases = handoff.taken(ctx, p.handed, responses, revision)
    handed_key = p.handed.pick.task.key if leases and p.handed is not None else None
    left = [q for q in p.queued if q[0].key != handed_key]
    if left and not tripped and not ctx.ahead:
        _expect(ctx, left, p.run_item, revision)
    ended = done >= int(p.run["tasks_total"])
    return _Result(tripped, p.props or joined, ended, bool(p.queued) or joined, leases)


def _expect(ctx: Ctx, queued: list[tuple[c.Item, TaskRec]], run_item: c.Item, rev: int) -> None:
    """The successors this finish queued, as the entries its store object's next claim
    expects at the queue head (that claim compares that nothing lies before them)."""
    out = []
    for item, rec in queued:
        if rec["state"] != TaskState.READY.value or not rec.get("qkey"):
            continue
        head: QueueEntry = {"nb": 0.0, "sel": rec["spec"].get("selector") or {}}
        value = dumps(head)
        entry = c.Item(rec["qkey"], value, rev, rev, 0)
        out.append((entry, c.Item(item.key, dumps(rec), item.create, rev, 0), run_item))
    ctx.ahead = sorted(out, key=lambda e: e[0].key)
    ids = (ctx.keys.split(e[0].key, "queue")[3:5] for e in ctx.ahead)
    ctx.guess = [(r, t) for r, t in ids]


def _recorded(task: c.Item | None, lease: Lease) -> bool:
    """The task's record already holds this token's result (a finish whose reply was lost)."""
    if task is None:
        return False
    attempts = load_task(task.value).get("attempts", [])
    if len(attempts) < lease.attempt:
        return False
    a = attempts[lease.attempt - 1]
    return int(a.get("token") or 0) == lease.token and a.get("state") in _RECORDED


def _record_attempt(rec: TaskRec, lease: Lease, outcome: Outcome, *, now: float) -> None:
    attempt = rec["attempts"][-1]
    if int(attempt["number"]) != lease.attempt:
        raise errors.LeaseLost(lease.run_id, lease.task_id, lease.attempt)
    reason = (
        outcome.reason
        if not outcome.succeeded or outcome.reason is not Reason.EXIT
        else Reason.EXIT
    )
    attempt.update(
        {
            "token": lease.token,
            "exit_code": outcome.exit_code,
            "reason": reason.value,
            "error": outcome.error,
            "finished_at": now,
        }
    )
    if outcome.started_at is not None:
        attempt["started_at"] = outcome.started_at
    rec["outputs"] = dict(outcome.outputs)


def _successors(
    ctx: Ctx,
    b: flow.Batch,
    run: RunRec,
    task_id: str,
    rec: TaskRec,
    seen: Seen,
    *,
    now: float,
) -> list[tuple[c.Item, TaskRec]]:
    """Advance a few successors in this transaction (returned, as written); many, through a
    `prop/` marker."""
    if len(rec.get("succ", [])) > flow.PER_TXN:
        b.put(ctx.keys.prop(run["id"], task_id), b"1")
        return []
    flow.arrive(b, ctx.keys, run["id"], rec)  # at its wide successors
    succs = {
        s: (item, load_task(item.value))
        for s in flow.narrow_succ(rec)
        if (item := seen.get(ctx.keys.task(run["id"], s))) is not None
    }
    deps = flow.dep_reader(
        ctx.client, ctx.keys, run["id"], flow.freed_deps(task_id, succs), known={task_id: rec}
    )
    flow.advance(b, ctx.keys, run, task_id, succs, deps, now=now)
    return list(succs.values())
