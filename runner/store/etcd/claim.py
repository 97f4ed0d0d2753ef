"""Claim ready tasks on etcd: one compare-and-set transaction per claim.

A claim compares the queue entry, the task record and the run record it read, and that no
ownership key exists; it deletes the entry and creates the ownership key on the worker's lease
(the fencing token is that key's create revision, see `context`). It usually needs no read
before it: the store object keeps the entries it expects at the queue head with their records
(`Ctx.ahead`, refilled by the success branch of each claim and by finishes that queue
successors) and commits directly, comparing their revisions and that no queue key lies before
or between them (a range compare), so the order is exactly as if it had read the head. When a
compare fails it reads the head and tries again, at a random offset within the top priority
after a conflict with another worker (no head-key race).

Head reads are bounded by a key range, not only a limit: etcd 3.4 visits every key of a range
to answer a limited read, so a read of the whole queue costs O(queue) however few entries it
returns. A head read covers the queue up to `SPAN` entries past the last head read's last key
(within its priority and ready time, see `head.end`), and reads on past that bound only when
the bounded part held too few entries; so a claim's CPU does not grow with the queue.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from runner import dispatch, errors, transitions
from runner.models import Lease, RunContext, RunState, TaskSpec, TaskState
from runner.store.etcd import client as c
from runner.store.etcd import cluster, compaction, flow, groups, head, workers
from runner.store.etcd.context import MAX_OPS, Ctx, Pick, Seen, worker_lost
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import (
    HeldRec,
    LockRec,
    OwnRec,
    QueueEntry,
    RunRec,
    TaskRec,
    dumps,
    load_entry,
    load_run,
    loads,
    token_of,
)

MISS_PAUSE = 8  # claims that read the head first after a guessed claim failed its compares
HEAD_READS = 4  # entries whose records a claim reads for the next one
HEAD_WINDOW = 8  # queue entries a claim's success branch returns
LOST_ROUNDS = 2  # claims again for the picks another worker took, this many times at most
MAX_PICKS = 64  # tasks per claim transaction (each in a nested transaction: one operation)

# ---------------------------------------------------------------------- claim


def claim(
    ctx: Ctx, worker_id: str, *, now: float, limit: int, labels: Mapping[str, str] | None
) -> list[Lease]:
    """See Store.claim: the worker's assignments first (read again only when the watch
    saw a change to cluster keys), then the shared queue."""
    view = cluster.worker_view(ctx, worker_id)
    if view.draining:
        return []
    lease = ctx.leases.get(worker_id)
    if lease is None:  # registered through another store object
        lease, _ = workers.lease_of(ctx, worker_id)
    leases: list[Lease] = []
    if view.assigned:
        ctx.cluster.views.pop(worker_id, None)  # read them again next time
        leases = claim_assigned(ctx, worker_id, lease, view.assigned, now=now, limit=limit)
    if len(leases) >= limit or queue_unchanged(ctx):
        return leases
    more = claim_queue(ctx, worker_id, lease, now=now, limit=limit - len(leases), labels=labels)
    return leases + more


def queue_unchanged(ctx: Ctx) -> bool:
    """This object read an empty queue while its watch ran, and since then neither the
    watch saw a new queue entry nor did this object write one: a claim would find nothing
    (a worker's wait wakes on every finish, so most of its claims would be such empty
    reads). Another's new entry whose event is still on its way wakes the wait after."""
    empty_at, watcher = ctx.empty_at, ctx.watcher
    return bool(
        empty_at
        and not ctx.ahead
        and 0 < watcher.origin <= empty_at
        and max(watcher.queue_rev, ctx.client.tracked_rev) <= empty_at
    )


def claim_queue(
    ctx: Ctx, worker_id: str, lease_id: int, *, now: float, limit: int, labels: Any
) -> list[Lease]:
    """Take up to `limit` ready tasks in one transaction; on a conflict with another worker,
    read again and pick at a random offset within the highest priority (no head-key race)."""
    want = min(limit, MAX_PICKS)
    contended = ctx.misses > 0  # a claim of this object lost a race lately
    blind = _blind(ctx, now=now, labels=labels, want=want)
    got: list[Lease] = []
    if blind is not None:
        picks, runs, ordered = blind
        got = _commit_claim(ctx, worker_id, lease_id, picks, runs, now=now, ordered=ordered)
        if len(got) == len(picks) and (len(got) >= want or not ctx.ahead_cut):
            return got
        ctx.misses = MISS_PAUSE
    rounds = 0
    for rnd in range(20):
        if len(got) >= want or (got and rounds >= LOST_ROUNDS):
            break
        spread = contended or rnd > 0
        need = want - len(got)
        picks, runs = _candidates(ctx, now=now, labels=labels, want=need, spread=spread)
        if not picks:
            break
        leases = _commit_claim(ctx, worker_id, lease_id, picks[:need], runs, now=now)
        got += leases
        if len(leases) == min(need, len(picks)):
            break  # all it picked: what the queue had (a short queue), or enough
        ctx.misses = MISS_PAUSE
        rounds += bool(leases)
    return got


def claim_assigned(
    ctx: Ctx, worker_id: str, lease_id: int, entries: list[c.Item], *, now: float, limit: int
) -> list[Lease]:
    """Claim up to `limit` of the worker's assignments (`assign/{worker}/...`) in one txn."""
    due = [e for e in entries if float(load_entry(e.value).get("nb", 0)) <= now]
    ids = [list(ctx.keys.task_of(e.key)) for e in due]
    run_keys = list(dict.fromkeys(ctx.keys.run(r) for r, _ in ids))
    found, _ = ctx.client.read_many([*run_keys, *(ctx.keys.task(r, t) for r, t in ids)])
    open_runs = {
        k: found[k] for k in run_keys if k in found and claimable_run(load_run(found[k].value))
    }
    open_runs = groups.admitted(ctx, open_runs)
    chosen = _within_limits(ctx, due, ids, open_runs, min(limit, MAX_PICKS), assigned=True)
    picks = _picks(ctx, chosen, found)
    if not picks:
        return []
    return _commit_claim(ctx, worker_id, lease_id, picks, open_runs, now=now)


def _blind(
    ctx: Ctx, *, now: float, labels: Any, want: int
) -> tuple[list[Pick], dict[str, c.Item], int] | None:
    """The picks of a claim without a read: the expected head entries, while they qualify,
    with the `ordered` count for `_order` (when more entries may follow `ahead`, the picks
    only: no range compare over the rest of the queue)."""
    ahead, ctx.ahead = ctx.ahead, []
    cut, ctx.ahead_cut = ctx.ahead_cut, False
    if ctx.misses > 0:
        ctx.misses -= 1
        return None
    if cut and len(ahead) < want:
        return None  # more may follow: a head read claims the whole batch in one transaction
    picks: list[Pick] = []
    runs: dict[str, c.Item] = {}
    for entry, task, run_item in ahead[:want]:
        rec: TaskRec = loads(task.value)
        run: RunRec = loads(run_item.value)
        if (
            not _due(entry, now, labels)
            or not claimable_run(run)
            or not groups.is_admitted(ctx, run)
            or run.get("parallelism")
            or rec.get("qkey") != entry.key
            or b'"lk"' in entry.value
            or cluster.reserved(run, ctx.cluster.mode)
        ):
            break
        picks.append(Pick(entry, task, run["id"], rec))
        runs[run_item.key] = run_item
    ctx.guess = ctx.guess[len(picks) :]
    return (picks, runs, len(picks) if cut else want) if picks else None


def _order(ctx: Ctx, picks: list[Pick], want: int) -> list[Any]:
    """Compares: no queue entry before the picks or between them, and none after them when
    they are fewer than `want` (a read of the head would have found the same picks)."""
    keys, names = ctx.keys, [p.entry.key for p in picks]
    out = head.before(ctx, names[0])
    out.extend(c.none_in(a + "\0", b) for a, b in pairwise(names))
    if len(picks) < want:
        out.append(c.none_in(names[-1] + "\0", c.range_end(keys.queue()).decode()))
    return out


def _candidates(
    ctx: Ctx, *, now: float, labels: Any, want: int, spread: bool
) -> tuple[list[Pick], dict[str, c.Item]]:
    """Up to `want` claimable queue entries with their task records, and their open runs.
    Only the records of the entries it picks are read (speculatively the first `want` due
    ones, with the runs, in one round trip)."""
    window = max(32, 2 * want) if spread else max(8, 2 * want)
    # Spread: start at a random entry of the last head read, whose records are read with the
    # head (right unless another worker took it meanwhile), else at a random one of this read.
    guess = random.sample(ctx.guess, min(want, len(ctx.guess))) if spread else ctx.guess[:want]
    entries, found = _read_head(ctx, window, guess)
    due = [e for e in entries if _due(e, now, labels)]
    if spread and due:
        tier = ctx.keys.split(due[0].key, "queue")[0]
        top = [e for e in due if ctx.keys.split(e.key, "queue")[0] == tier]
        guessed = {tuple(g) for g in guess}
        hits = [
            i for i, e in enumerate(top) if tuple(ctx.keys.split(e.key, "queue")[3:5]) in guessed
        ]
        k = hits[0] if hits else random.randrange(len(top))
        due = top[k:] + top[:k] + due[len(top) :]
    ids = [ctx.keys.split(e.key, "queue")[3:5] for e in due]
    run_keys = list(dict.fromkeys(ctx.keys.run(r) for r, _ in ids))
    wanted = [*run_keys, *(ctx.keys.task(r, t) for r, t in ids[:want])]
    if any(k not in found for k in wanted):  # the guess missed: one more round trip
        found.update(ctx.client.read_many(k for k in wanted if k not in found)[0])
    open_runs = {
        k: found[k] for k in run_keys if k in found and claimable_run(load_run(found[k].value))
    }
    open_runs = groups.admitted(ctx, open_runs)
    chosen = _within_limits(ctx, due, ids, open_runs, want)
    taken = {e.key for e, _ in chosen}
    ctx.guess = [(r, t) for e, (r, t) in zip(due, ids, strict=True) if e.key not in taken][:32]
    missing = [k for _, k in chosen if k not in found]
    if missing:  # entries further down, behind runs at their parallelism
        found.update(ctx.client.read_many(missing)[0])
    return _picks(ctx, chosen, found), open_runs


def _picks(ctx: Ctx, chosen: list[tuple[c.Item, str]], found: dict[str, c.Item]) -> list[Pick]:
    """The chosen entries whose task record still names them (`qkey`)."""
    picks: list[Pick] = []
    for entry, task_key in chosen:
        item = found.get(task_key)
        rec: TaskRec | None = None if item is None else loads(item.value)
        if item is None or rec is None or rec.get("qkey") != entry.key:
            continue
        run_id = ctx.keys.task_of(entry.key)[0]
        picks.append(Pick(entry, item, run_id, rec, lock_rev=ctx.lock_rev))
    return picks


def _read_head(
    ctx: Ctx, window: int, guess: list[tuple[str, str]]
) -> tuple[list[c.Item], dict[str, c.Item]]:
    """The queue head and, in the same round trip, the run and task records of the entries
    guessed to be next (those after the last claim's picks: right for a lone worker)."""
    keys = ctx.keys
    reads = [*dict.fromkeys(keys.run(r) for r, _ in guess), *(keys.task(r, t) for r, t in guess)]
    end, start = head.end(ctx), head.start(ctx)
    responses, rev = ctx.client.reads(
        [c.get(keys.floor()), head.op(keys, end, window, start), *(c.get(k) for k in reads)],
        "claim candidates",
    )
    floor = next(iter(c.items_of(responses[:1])), None)
    entries = c.items_of(responses[1:2])
    if not head.valid(ctx, start, floor):  # lowered below where this read started: again
        start = keys.queue()
        again, rev = ctx.client.reads(
            [c.get(keys.floor()), head.op(keys, end, window, start)], "claim candidates"
        )
        floor, entries = next(iter(c.items_of(again[:1])), None), c.items_of(again[1:])
    head.repair(ctx, start, floor, entries)
    head.seen(ctx, floor)
    if end is not None and len(entries) < window:  # the bounded part is short: read on
        rest = head.op(keys, None, window - len(entries), end)
        more, rev = ctx.client.reads([rest], "claim candidates")
        found = c.items_of(more)
        head.adapt(ctx, short=bool(found))
        entries += found
    elif end is not None:
        head.adapt(ctx, short=False)
    ctx.head_last = entries[-1].key if entries else ""
    ctx.head_first = entries[0].key if entries else ""
    ctx.empty_at = 0 if entries else rev
    return entries, {i.key: i for i in c.items_of(responses[2:])}


def _within_limits(
    ctx: Ctx,
    due: list[c.Item],
    ids: list[list[str]],
    open_runs: dict[str, c.Item],
    want: int,
    *,
    assigned: bool = False,
) -> list[tuple[c.Item, str]]:
    """The first `want` entries of open runs with room under their parallelism and locks, not
    reserved for the leading scheduler (unless `assigned`)."""
    room = _room(ctx, open_runs)
    held, ctx.lock_rev = cluster.holders(
        ctx.client,
        ctx.keys,
        (n for e in due if b'"lk"' in e.value for n, _ in cluster.entry_locks(e)),
    )
    chosen: list[tuple[c.Item, str]] = []
    reserved = {
        k: cluster.reserved(load_run(i.value), ctx.cluster.mode, assigned=assigned)
        for k, i in open_runs.items()
    }
    for entry, (run_id, task_id) in zip(due, ids, strict=True):
        if len(chosen) >= want:
            break
        if reserved.get(ctx.keys.run(run_id), True):  # not open, or left for the scheduler
            continue
        locks = cluster.entry_locks(entry) if b'"lk"' in entry.value else []
        if locks and not dispatch.locks_free(locks, held):
            continue
        for name, _ in locks:
            held[name] = held.get(name, 0) + 1
        if run_id in room:
            if room[run_id] <= 0:
                continue
            room[run_id] -= 1
        chosen.append((entry, ctx.keys.task(run_id, task_id)))
    return chosen


def _due(entry: c.Item, now: float, labels: Any) -> bool:
    not_before, selector = _entry_terms(entry.value)
    return not_before <= now and transitions.selector_matches(selector, labels)


@functools.lru_cache(maxsize=256)
def _entry_terms(value: bytes) -> tuple[float, dict[str, str]]:
    """A queue entry's not-before time and selector (most entries share one value: cached)."""
    decoded: QueueEntry = loads(value)
    return float(decoded.get("nb", 0)), decoded.get("sel") or {}


def claimable_run(run: RunRec) -> bool:
    return not RunState(run["state"]).terminal and not run.get("halted")


def _room(ctx: Ctx, runs: dict[str, c.Item]) -> dict[str, int]:
    """Free parallelism slots of the runs that have a limit (the rest are unlimited)."""
    decoded: list[RunRec] = [loads(i.value) for i in runs.values()]
    limited = [r for r in decoded if r.get("parallelism")]
    counts = ctx.client.counts([ctx.keys.own(r["id"], "") for r in limited])
    return {r["id"]: int(r["parallelism"] or 0) - n for r, n in zip(limited, counts, strict=True)}


def _commit_claim(
    ctx: Ctx,
    worker_id: str,
    lease_id: int,
    picks: list[Pick],
    runs: dict[str, c.Item],
    *,
    now: float,
    ordered: int = 0,
) -> list[Lease]:
    """Commit a claim of `picks` (`ordered`: a blind claim of that many, see `_order`). Each
    pick is claimed in a transaction of its own nested in the claim's, so the picks that
    another worker took meanwhile fail alone and the others are claimed."""
    keys, b = ctx.keys, flow.Batch()
    nonce = uuid.uuid4().hex
    who = Claimer(worker_id, lease_id, nonce)
    after = _guard_runs(ctx, b, picks, runs, now=now)
    if ordered:
        b.compares.extend(_order(ctx, picks, ordered))
    b.compares.extend(_lock_compares(keys, picks))
    at = len(b.ops)
    for slot, p in enumerate(picks):
        inner = flow.Batch()
        _claim_ops(inner, keys, p, who, slot, now=now)
        b.ops.append(c.nested(inner.compares, inner.ops))
    succ_keys = _succ_keys(keys, picks, room=MAX_OPS - HEAD_READS * 2 - 3 - len(b.ops))
    b.ops.extend(c.get(k) for k in succ_keys)  # for the finishes: no read before them
    next_keys = _next_keys(ctx, after)
    if (lift := _lift(ctx, picks)) is not None:
        b.ops.append(lift)
    end, start = head.end(ctx), head.start(ctx)
    b.ops.append(c.get(keys.floor()))  # as the lift leaves it
    b.ops.append(head.op(keys, end, HEAD_WINDOW, start))  # for the next claim: no read before it
    b.ops.extend(c.get(k) for k in next_keys)
    ctx.failpoints.hit("claim.before_commit")
    try:
        res = ctx.client.txn(b.compares, b.ops, "claim")
    except c.LeaseMissing:
        raise worker_lost(worker_id) from None
    except errors.StoreUnavailable:
        token, slots = _claimed_anyway(ctx, picks, nonce)
        if not slots:
            raise
        return leases_of(ctx, [picks[i] for i in slots], runs, worker_id, token, slots)
    slots = (
        [i for i in range(len(picks)) if res.responses[at + i].response_txn.succeeded]
        if res.succeeded
        else []
    )
    if not slots:
        return []
    ctx.failpoints.hit("claim.after_commit")
    _compact_later(ctx, len(slots))
    found = {i.key: i for i in c.items_of(res.responses)}
    for slot in slots:
        succs = {k: found.get(k) for k in succ_keys}
        remember(ctx, picks[slot], slot, res.revision, after, succs)
    floor = found.get(keys.floor())
    if head.valid(ctx, start, floor):
        _expect(ctx, found, after, res.revision, bounded=end is not None)
        first = found.get(ctx.head_first)
        head.repair(ctx, start, floor, [first] if first is not None else [])
    else:  # the floor was lowered below the read's start: the next claim reads the head
        ctx.ahead, ctx.guess, ctx.ahead_cut, ctx.empty_at = [], [], True, 0
    head.seen(ctx, floor)
    taken = [picks[i] for i in slots]
    return leases_of(ctx, taken, runs, worker_id, res.revision, slots)


def _lift(ctx: Ctx, picks: list[Pick]) -> Any | None:
    """The claim's raise of the queue's floor (`head.lift`): to its first pick, or to the first
    entry of the head read the picks came from when that lies before it."""
    queue = ctx.keys.queue()
    firsts = [p.entry.key for p in picks if p.entry.key.startswith(queue)]
    if not firsts:  # assignments
        return None
    if ctx.head_first.startswith(queue):
        firsts.append(ctx.head_first)
    return head.lift(ctx, min(firsts))


def _compact_later(ctx: Ctx, claimed: int) -> None:
    """Count the claimed queue entries; when a compaction check is due, run it on a sender
    thread (see `compaction`): the claim neither waits for it nor fails by it."""
    if counted := ctx.compaction.claimed(claimed):
        try:
            ctx.senders().submit(compaction.check, ctx.client, ctx.keys.compaction(), counted)
        except RuntimeError:  # the store object is closing: a later check compacts
            return


def _lock_compares(keys: Keys, picks: list[Pick]) -> list[Any]:
    """No holder was added to the picks' locks since their holders were counted."""
    rev = max(p.lock_rev for p in picks)
    names = {n for p in picks for n, _ in cluster.entry_locks(p.entry)}
    return [c.unchanged_since(keys.lock_prefix(n), rev) for n in sorted(names)]


def _next_keys(ctx: Ctx, after: dict[str, c.Item]) -> list[str]:
    """Records to read for the claim after this one: the next guessed entries' task and run."""
    out: list[str] = []
    for run_id, task_id in ctx.guess[:HEAD_READS]:
        out.append(ctx.keys.task(run_id, task_id))
        if ctx.keys.run(run_id) not in after:
            out.append(ctx.keys.run(run_id))
    return list(dict.fromkeys(out))


def _expect(
    ctx: Ctx, found: dict[str, c.Item], after: dict[str, c.Item], rev: int, *, bounded: bool
) -> None:
    """From a claim's success branch: the queue head after it, and the records read of its
    first entries, as `Ctx.ahead` and `Ctx.guess` for the next claim (`bounded`: the head
    read ended at `head_end`, so more entries may follow what it found)."""
    queue = ctx.keys.queue()
    head = sorted((i for k, i in found.items() if k.startswith(queue)), key=lambda i: i.key)
    ctx.guess = [(r, t) for r, t in (ctx.keys.split(i.key, "queue")[3:5] for i in head)]
    ctx.empty_at = 0 if head or bounded else rev
    ctx.head_last = head[-1].key if head else ""
    ctx.head_first = head[0].key if head else ""
    ctx.ahead_cut = bounded or len(head) >= HEAD_WINDOW
    ctx.ahead = []
    for entry, (run_id, task_id) in zip(head, ctx.guess, strict=True):
        task = found.get(ctx.keys.task(run_id, task_id))
        run = after.get(ctx.keys.run(run_id)) or found.get(ctx.keys.run(run_id))
        if task is None or run is None:
            return
        run = c.Item(run.key, run.value, run.create, run.mod or rev, 0)
        ctx.ahead.append((entry, task, run))


def _guard_runs(
    ctx: Ctx, b: flow.Batch, picks: list[Pick], runs: dict[str, c.Item], *, now: float
) -> dict[str, c.Item]:
    """Compare the picks' run records (and parallelism); start pending runs. Returns the run
    records as the claim leaves them (mod 0: written by the claim)."""
    after: dict[str, c.Item] = {}
    for run_key, item in runs.items():
        run: RunRec = loads(item.value)
        if not any(p.run_id == run["id"] for p in picks):
            continue
        b.guard(run_key, item.mod)
        after[run_key] = item
        if run.get("parallelism"):
            b.compares.append(c.unchanged_since(ctx.keys.own(run["id"], ""), ctx.client.revision))
        if run["state"] == RunState.PENDING.value:
            run.update({"state": RunState.RUNNING.value, "started_at": now})
            b.put(run_key, run)
            after[run_key] = c.Item(run_key, dumps(run), item.create, 0, 0)
    return after


def _succ_keys(keys: Keys, picks: list[Pick], *, room: int) -> list[str]:
    """The successor records the picks' finishes will compare, as many as fit in `room`."""
    out: list[str] = []
    for p in picks:
        succ = flow.narrow_succ(p.rec)
        if len(succ) <= flow.PER_TXN and len(out) + len(succ) <= room:
            out.extend(keys.task(p.run_id, s) for s in succ)
    return out


def remember(ctx: Ctx, p: Pick, slot: int, rev: int, after: dict[str, c.Item], succs: Seen) -> None:
    """Keep what the claim wrote, for the finish of this attempt."""
    keys, task_id = ctx.keys, p.rec["spec"]["id"]
    run_key, own_key = keys.run(p.run_id), keys.own(p.run_id, task_id)
    run = after[run_key]
    number = len(p.rec["attempts"])
    seen: Seen = {
        own_key: c.Item(own_key, dumps({"slot": slot}), rev, rev, 0),
        p.task.key: c.Item(p.task.key, p.written or dumps(p.rec), p.task.create, rev, 0),
        run_key: c.Item(run_key, run.value, run.create, run.mod or rev, 0),
        keys.log_meta(p.run_id, task_id, number): None,
    }
    for s in p.rec.get("succ", []):
        if (k := keys.task(p.run_id, s)) in succs:
            seen[k] = succs[k]
    ctx.remember(token_of(rev, slot), seen)


@dataclass(frozen=True, slots=True)
class Claimer:
    """Who claims, in which transaction: the worker, its lease, the claim's nonce."""

    worker_id: str
    lease_id: int
    nonce: str


def _claim_ops(b: flow.Batch, keys: Keys, p: Pick, who: Claimer, slot: int, *, now: float) -> None:
    b.guard(p.entry.key, p.entry.mod)
    b.guard(p.task.key, p.task.mod)
    b.compares.append(c.created_at(keys.own(p.run_id, p.rec["spec"]["id"]), 0))
    b.delete(p.entry.key)
    claim_writes(b, keys, p, who, slot, now=now)


def claim_writes(
    b: flow.Batch, keys: Keys, p: Pick, who: Claimer, slot: int, *, now: float
) -> None:
    """The writes of a claim of `p` (its compares are the caller's): a new running attempt in
    the task record, the ownership key on the worker's lease, lock holders, the `held` key."""
    worker_id, lease_id, nonce = who.worker_id, who.lease_id, who.nonce
    task_id = p.rec["spec"]["id"]
    number = len(p.rec.get("attempts", [])) + 1
    p.rec.pop("qkey", None)
    p.rec.update({"state": TaskState.RUNNING.value, "waiting_reason": None})
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
    owner: OwnRec = {"worker": worker_id, "attempt": number, "nonce": nonce, "slot": slot}
    b.put(keys.own(p.run_id, task_id), owner, lease_id)
    for name, _ in cluster.entry_locks(p.entry):  # held under the lease: a dead holder frees it
        holder: LockRec = {"worker": worker_id, "attempt": number}
        b.put(keys.lock_key(name, p.run_id, task_id), holder, lease_id)
    held: HeldRec = {"attempt": number}
    b.put(keys.held(worker_id, p.run_id, task_id), held)
    p.written = dumps(p.rec)
    b.put(p.task.key, p.written)


def _claimed_anyway(ctx: Ctx, picks: list[Pick], nonce: str) -> tuple[int, list[int]]:
    """After an ambiguous failure: the claim's revision and the slots of the picks it claimed
    if it committed after all (their ownership keys carry `nonce`), else (0, [])."""
    keys = [ctx.keys.own(p.run_id, p.rec["spec"]["id"]) for p in picks]
    try:
        found, _ = ctx.client.read_many(keys)
    except errors.StoreError:
        return 0, []
    owns = [found.get(k) for k in keys]
    slots = [i for i, own in enumerate(owns) if own and _nonce(own) == nonce]
    return (owns[slots[0]].create, slots) if slots else (0, [])  # type: ignore[union-attr]


def _nonce(own: c.Item) -> str | None:
    value: OwnRec = loads(own.value)
    return value.get("nonce")


def leases_of(
    ctx: Ctx,
    picks: list[Pick],
    runs: dict[str, c.Item],
    worker_id: str,
    token: int,
    slots: list[int] | None = None,
) -> list[Lease]:
    """The leases of claimed `picks`, at `slots` of the claim (default: 0, 1, ...)."""
    refs = {(p.run_id, r) for p in picks for r in p.rec.get("refs", [])}
    found, _ = ctx.client.read_many(ctx.keys.task(r, t) for r, t in refs)
    out: list[Lease] = []
    decoded: dict[str, RunRec] = {}
    for slot, p in zip(slots or range(len(picks)), picks, strict=True):
        run_key = ctx.keys.run(p.run_id)
        run = decoded.get(run_key) or decoded.setdefault(run_key, load_run(runs[run_key].value))
        outputs = {
            r: _outputs(found[k])
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


def _outputs(task: c.Item) -> dict[str, str]:
    rec: TaskRec = loads(task.value)
    return dict(rec.get("outputs") or {})
