"""Runs on etcd: submit and retry them within etcd's limits (128 operations, 1.5 MiB per
request), read, list and cancel them.

A run's task records and first queue entries are written in chunks while the run record does
not exist; workers skip queue entries of runs they cannot read, so the run becomes visible in
one step when the last transaction writes its record. The chunks are independent, so several
are in flight at once (etcd commits concurrent requests with one disk sync).

One submission at a time writes a run id's chunks. It first takes `creating/{run}` (created
only if absent, on a short lease it keeps alive while it writes); every chunk and the last
transaction compare that key's create revision, and the last transaction deletes it. Another
submission of the same run id (two backfills of one tick, a backfill and the scheduler) waits
for the key to go, then finds the run stored (RunExists) or, when the creator died and its lease
ran out, takes the key and first deletes what the dead creator wrote (`_clear`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from runner import errors, interrupts, transitions
from runner.models import Plan, Run, RunState, TaskRecord, TaskState, When
from runner.store.etcd import client as c
from runner.store.etcd import cluster, flow, gates, groups, hooks
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import (
    ActiveRec,
    RunRec,
    TaskRec,
    dumps,
    load_run,
    load_task,
    loads,
    run_from_dict,
    run_to_dict,
    task_record,
    waiting_reason,
)

MAX_BYTES = 1024 * 1024  # per transaction, under etcd's 1.5 MiB request limit
MAX_OPS = 100
MAX_TASKS = 200_000  # per run: its records are built and held while they are written
IN_FLIGHT = 8  # chunks sent at once (bounded: a 100,000-task run is not held in memory whole)
RUNS_CACHED = 8  # runs whose task records get_run keeps, to read only what changed
# The creation key's lease: how long a creator that died blocks another creation of its run id.
# Refreshed every third of it while the chunks go (a 100,000-task run takes seconds).
CREATE_TTL = 10.0
CREATE_WAIT = 300.0  # seconds a submission waits for another's creation of the same run id
CLEAR_PER_TXN = 25  # leftover task records deleted per transaction (4 deletes each)
Recs = dict[str, tuple[c.Item, TaskRec]]  # task id -> its item and record


def task_records(plan: Plan) -> list[TaskRec]:
    """The stored record of every task: spec, state, successors and output references."""
    tasks = tuple(plan.tasks)  # several passes: a streamed plan is made once
    succ: dict[str, list[str]] = defaultdict(list)
    by_name: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        by_name[t.name].append(t.id)
        for d in t.depends:
            succ[d].append(t.id)
    ids = {t.id for t in tasks}
    wide = {t.id: len(set(t.depends)) for t in tasks if len(set(t.depends)) > flow.WIDE}
    out: list[TaskRec] = []
    for i, t in enumerate(tasks):
        refs = sorted(
            {r2 for r in transitions.output_refs(t) for r2 in ([r] if r in ids else by_name[r])}
        )
        rec: TaskRec = {
            "order": i,
            "spec": t.to_dict(),
            "state": TaskState.PENDING.value,
            "attempts": [],
            "outputs": {},
            "losses": 0,
            "ready_at": None,
            "succ": succ[t.id],
            "refs": refs,
        }
        if t.id in wide:
            rec["wide"] = wide[t.id]  # arrivals are counted (see flow.arrive)
        else:
            rec["waiting"] = list(dict.fromkeys(t.depends))
        if fan := {s: wide[s] for s in succ[t.id] if s in wide}:
            rec["fan"] = fan  # its wide successors, with the arrivals each waits for
        out.append(rec)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """What `create_run` stores: the plan and the run's identity."""

    plan: Plan
    run_id: str
    now: float
    key: str | None
    scheduled_time: float | None

    def run(self) -> Run:
        plan = self.plan
        return Run(
            id=self.run_id,
            workflow=plan.workflow,
            state=RunState.PENDING,
            params=dict(plan.params),
            created_at=self.now,
            key=self.key,
            scheduled_time=self.scheduled_time,
            plan_hash=plan.hash,
            tasks_total=len(plan.tasks),
        )


def create_run(ctx: Ctx, new: NewRun) -> Run:
    """Store a run (see Store.create_run)."""
    if len(new.plan.tasks) > MAX_TASKS:
        raise errors.UsageError(
            f"run {new.run_id}: {len(new.plan.tasks):,} task instances; the etcd store takes "
            f"at most {MAX_TASKS:,} in one run (the embedded store takes 1,000,000): split the "
            "workflow, or run it on the embedded store"
        )
    client, keys, plan, run_id = ctx.client, ctx.keys, new.plan, new.run_id
    _check_new(client, keys, run_id, new.key)
    run = new.run()
    creation, leftovers = _take(ctx, new)
    try:
        if leftovers:  # task records of a creator that died
            _clear(ctx, run_id, creation)
        written = _write_tasks(ctx, new, creation)
        ctx.failpoints.hit("create_run.before_commit")
        record = _commit(ctx, new, run, creation)
    except _Lost:
        _give_up(ctx, new, creation)
    except errors.StoreUnavailable:
        raise  # the creation key goes with its lease (a revoke would wait for etcd as well)
    except BaseException:
        with contextlib.suppress(errors.StoreError):
            creation.release()  # another submission of the run id need not wait for the lease
        raise
    if any("/gate/" in k for k in written):  # a root with `if:`: decide it now
        flow.settle(client, keys, run_id, now=new.now)
    if plan.concurrency is not None and plan.concurrency.cancel_in_progress:
        cancel = functools.partial(end_run, ctx, state=RunState.CANCELLED, now=new.now)
        groups.cancel_ahead(ctx, run_id, plan.concurrency.group, cancel=cancel)
    return dataclasses.replace(run, group=record.get("group"))


def _commit(ctx: Ctx, new: NewRun, run: Run, creation: _Creation) -> RunRec:
    """The last transaction: the run record (visibility), its markers and idempotency key,
    and the creation key deleted; raises `_Lost` when a compare fails."""
    client, keys, plan, run_id, key = ctx.client, ctx.keys, new.plan, new.run_id, new.key
    # from the latest live clock: a later one must not see the deadline cut
    deadline = None if plan.timeout is None else new.now + ctx.clocks.ahead + plan.timeout
    final = flow.Batch(compares=creation.compares())
    record = run_to_dict(
        run, fail_fast=plan.fail_fast, parallelism=plan.parallelism, dispatch=plan.dispatch
    )
    if plan.hooks:
        record["hooks"] = [h.to_dict() for h in plan.hooks]
    if plan.concurrency is not None:
        record["group"] = plan.concurrency.group
        final.ops.extend(groups.member_ops(keys, record))
    final.put(keys.run(run_id), record)
    active: ActiveRec = {"deadline": deadline}
    final.put(keys.active(run_id), active)
    if key is not None:
        final.compares.append(c.created_at(keys.run_key(key), 0))
        final.put(keys.run_key(key), run_id.encode())
    final.delete(creation.key)  # its lease is left to expire: no round trip to revoke it
    creation.refresh()
    if not client.txn(final.compares, final.ops, "create run").succeeded:
        raise _Lost()
    return record


class _Lost(Exception):
    """A write of this submission failed its compares: the run was stored meanwhile, its
    idempotency key names another run, or the creation key is no longer this submission's
    (its lease ran out while it stalled)."""


@dataclass(slots=True)
class _Creation:
    """This submission's hold on `creating/{run}`: the lease the key lives on and the key's
    create revision (0 until taken), which every write of the run's creation compares."""

    client: c.Client
    key: str
    run_key: str
    lease: int
    rev: int = 0
    refreshed: float = field(default_factory=time.monotonic)

    def compares(self) -> list[c.Cmp]:
        """The run is not stored and the creation key is still this submission's."""
        return [c.created_at(self.run_key, 0), self.held()]

    def held(self) -> c.Cmp:
        return c.created_at(self.key, self.rev)

    def refresh(self) -> None:
        """Keep the lease alive (a round trip every third of its TTL at most); `_Lost` once
        it has expired: another submission may hold the key now."""
        if time.monotonic() - self.refreshed < CREATE_TTL / 3:
            return
        if self.client.keepalive(self.lease) <= 0:
            raise _Lost()
        self.refreshed = time.monotonic()

    def release(self) -> None:
        """Revoke the lease, which deletes the key if this submission still holds it."""
        self.client.revoke(self.lease)


def _take(ctx: Ctx, new: NewRun) -> tuple[_Creation, bool]:
    """Take the run id's creation key (RunExists once the run is stored), waiting while
    another submission holds it; and whether task records of the run exist (left by a creator
    that died: the same transaction counts them)."""
    client, keys, run_id = ctx.client, ctx.keys, new.run_id
    lease = client.grant(CREATE_TTL)
    creation = _Creation(client, keys.creating(run_id), keys.run(run_id), lease)
    until = time.monotonic() + CREATE_WAIT
    while True:
        taken = client.txn(
            [c.created_at(creation.key, 0), c.created_at(keys.run(run_id), 0)],
            [c.put(creation.key, b"1", creation.lease), c.count(keys.task(run_id, ""))],
            "create run: take",
            failure=[c.get(keys.run(run_id))],
        )
        if taken.succeeded:
            break
        if c.items_of(taken.responses):  # stored by the submission that held the key
            creation.release()
            raise errors.RunExists(run_id, new.key or run_id)
        _await(creation, run_id, until)
    creation.rev = taken.revision
    return creation, bool(taken.responses[1].response_range.count)


def _await(creation: _Creation, run_id: str, until: float) -> None:
    """Wait (polling: a rare wait) until the creation key is gone; StoreError past `until`.
    A creator that died holds it until its lease expires, a live one until its run is stored."""
    pause = 0.02
    while creation.client.get(creation.key) is not None:
        if time.monotonic() + pause > until:
            creation.release()
            raise errors.StoreError(
                f"another submission has been creating run {run_id} for {CREATE_WAIT:g} s;"
                " try again later"
            )
        time.sleep(pause)
        pause = min(0.5, 2 * pause)
        try:
            creation.refresh()
        except _Lost:  # expired while waiting (nothing on it yet): a new one will do
            creation.lease = creation.client.grant(CREATE_TTL)
            creation.refreshed = time.monotonic()


def _clear(ctx: Ctx, run_id: str, creation: _Creation) -> None:
    """Delete the task records a creator that died left of the run, each with its queue entry
    (or assignment) and `gate/`/`aged/` markers, compared on the creation key: no claim takes
    a task of a run without its record, so none of them ran. A record another process changed
    meanwhile (aging, a dispatcher) is read again."""
    client, keys = ctx.client, ctx.keys
    while leftovers := client.scan(keys.task(run_id, "")):
        for start in range(0, len(leftovers), CLEAR_PER_TXN):
            b = flow.Batch(compares=[creation.held()])
            for item in leftovers[start : start + CLEAR_PER_TXN]:
                rec = load_task(item.value)
                b.guard(item.key, item.mod)
                b.delete(item.key)
                if qkey := rec.get("qkey"):  # its queue entry, or its assignment
                    b.delete(qkey)
                b.delete(keys.gate(run_id, rec["spec"]["id"]))
                b.delete(keys.aged(run_id, rec["spec"]["id"]))
            creation.refresh()
            done = client.txn(b.compares, b.ops, "create run: clear", [c.get(creation.key)])
            holder = c.items_of(done.responses)
            if not done.succeeded and (not holder or holder[0].create != creation.rev):
                raise _Lost()  # its lease ran out: the key's next holder clears them


def _give_up(ctx: Ctx, new: NewRun, creation: _Creation) -> NoReturn:
    """After `_Lost`: RunExists when the run or its idempotency key is another's, else
    StoreError. While this submission still holds the creation key it clears its own writes
    first; once it lost the key (it stalled past the lease), the key's next holder does."""
    client, keys, run_id = ctx.client, ctx.keys, new.run_id
    held = client.get(creation.key)
    if held is not None and held.create == creation.rev:
        if client.get(keys.run(run_id)) is None:  # the idempotency key names another run
            with contextlib.suppress(_Lost):  # lost the key meanwhile: its next holder clears
                _clear(ctx, run_id, creation)
        creation.release()
    _check_new(client, keys, run_id, new.key)
    raise errors.StoreError(
        f"run {run_id} was not stored: its creation stalled past its {CREATE_TTL:g} s lease"
        " (another submission of the run id may store it); try again"
    )


def _write_tasks(ctx: Ctx, new: NewRun, creation: _Creation) -> list[str]:
    """Write the run's task records and first queue entries in chunks; the keys written.
    Raises `_Lost` when a chunk fails its compares (after the others have ended)."""
    chunks = _Chunks(ctx.client, ctx.senders(), creation)
    _send_tasks(ctx, new, chunks)
    return chunks.wait()


def _send_tasks(ctx: Ctx, new: NewRun, chunks: _Chunks) -> None:
    keys, plan, run_id = ctx.keys, new.plan, new.run_id
    batch = flow.Batch(compares=chunks.creation.compares())
    size = 0
    for rec in task_records(plan):
        if plan.dispatch:
            rec["dsp"] = plan.dispatch  # copied into its queue entries, for the dispatcher
        if plan.aging is not None:
            rec["age"] = [plan.aging.every, plan.aging.by]  # for aging.promote
        starts = not rec.get("waiting") and not rec.get("wide")
        if starts:
            flow.enqueue(batch, keys, run_id, rec, now=new.now)
        value = dumps(rec)
        if batch.ops and (len(batch.ops) + 2 > MAX_OPS or size + len(value) > MAX_BYTES):
            queued = batch.ops.pop() if starts else None  # this record's entry goes with it
            chunks.send(batch)
            batch, size = flow.Batch(compares=chunks.creation.compares()), 0
            if queued is not None:
                batch.ops.append(queued)
        size += len(value)
        batch.put(keys.task(run_id, rec["spec"]["id"]), value)
    chunks.send(batch)


class _Chunks:
    """A run's chunks in flight, at most IN_FLIGHT at once."""

    def __init__(self, client: c.Client, senders: ThreadPoolExecutor, creation: _Creation) -> None:
        self.client, self.senders, self.creation = client, senders, creation
        self.pending: deque[Future[list[str]]] = deque()
        self.written: list[str] = []

    def send(self, batch: flow.Batch) -> None:
        if not batch.ops:
            return
        self.creation.refresh()  # the chunks of a large run take longer than the lease
        if len(self.pending) >= IN_FLIGHT:
            self._settle(self.pending.popleft())
        self.pending.append(self.senders.submit(self._write, batch))

    def wait(self) -> list[str]:
        """The keys written, once every chunk is."""
        while self.pending:
            self._settle(self.pending.popleft())
        return self.written

    def _settle(self, sent: Future[list[str]]) -> None:
        try:
            keys: list[str] = interrupts.result(sent)  # a Ctrl-C never leaves its lock held
            self.written += keys
        except BaseException:
            with interrupts.deferred():  # the others end first: a clear must see their writes
                for other in self.pending:
                    other.exception()
            self.pending.clear()
            raise

    def _write(self, batch: flow.Batch) -> list[str]:
        if not self.client.txn(batch.compares, batch.ops, "create run tasks").succeeded:
            raise _Lost()
        return [op.request_put.key.decode() for op in batch.ops]


def _check_new(client: c.Client, keys: Keys, run_id: str, key: str | None) -> None:
    if client.get(keys.run(run_id)) is not None:
        raise errors.RunExists(run_id, key or run_id)
    if key is not None:
        existing = client.get(keys.run_key(key))
        if existing is not None:
            raise errors.RunExists(existing.value.decode(), key)


def retry_run(client: c.Client, keys: Keys, run_id: str, *, now: float, dry_run: bool) -> list[str]:
    """Re-run the failed, cancelled and skipped tasks of a finished run (see Store.retry_run)."""
    run_item = client.get(keys.run(run_id))
    if run_item is None:
        raise errors.RunNotFound(run_id)
    run: RunRec = loads(run_item.value)
    if not RunState(run["state"]).terminal:
        raise errors.UsageError(f"run {run_id} has not finished; only finished runs can be retried")
    items = sorted(client.scan(keys.task(run_id, "")), key=lambda i: load_task(i.value)["order"])
    recs: Recs = {load_task(i.value)["spec"]["id"]: (i, load_task(i.value)) for i in items}
    again = [t for t, (_, r) in recs.items() if r["state"] in ("failed", "cancelled", "skipped")]
    if dry_run or not again:
        return again
    chosen = set(again)
    retry = Retry(run_id=run_id, chosen=chosen, recs=recs, now=now)
    retry.targets.update(_reset_arrivals(client, keys, run_id, recs, chosen))
    skipped: list[str] = []  # decided skipped again at once: their successors must hear of it
    gated = False  # a gate/ marker written (if:, forEach): drained once the run runs again
    for start in range(0, len(again), flow.PER_TXN):
        b = flow.Batch()
        for task_id in again[start : start + flow.PER_TXN]:
            item, rec = recs[task_id]
            _reset(b, keys, retry, rec)
            if rec["state"] == TaskState.SKIPPED.value and rec.get("succ"):
                skipped.append(task_id)
            b.guard(item.key, item.mod)
            b.put(item.key, rec)
        if not client.txn(b.compares, b.ops, "retry tasks").succeeded:
            raise errors.StoreError(f"retry {run_id}: the run changed meanwhile; try again")
        marker = keys.gate().encode()
        gated = gated or any(op.request_put.key.startswith(marker) for op in b.ops)
    _restart(client, keys, run_item, skipped, now=now)
    if gated:
        flow.settle(client, keys, run_id, now=now)
    return again


def _restart(
    client: c.Client, keys: Keys, run_item: c.Item, skipped: list[str], *, now: float
) -> None:
    """Make the retried run running again, and advance the successors of the tasks the retry
    skipped again at once (`prop/` markers, written with the running run: a drain of a
    finished run would cancel them; the first ones in the same transaction)."""
    run = load_run(run_item.value)
    run_id = run["id"]
    run.update(
        {"state": RunState.RUNNING.value, "finished_at": None, "reason": None, "halted": False}
    )
    ops = [c.put(run_item.key, dumps(run)), c.put(keys.active(run_id), dumps({"deadline": None}))]
    if run.get("group"):  # to the back of its group's line, to be admitted again
        run["ggen"] = int(run.get("ggen", 0)) + 1
        ops[0] = c.put(run_item.key, dumps(run))
        ops += groups.member_ops(keys, run)
    markers = [c.put(keys.prop(run_id, t), b"1") for t in skipped]
    first, rest = markers[: MAX_OPS - len(ops)], markers[MAX_OPS - len(ops) :]
    if not client.txn([c.mod_is(run_item.key, run_item.mod)], ops + first, "retry run").succeeded:
        raise errors.StoreError(f"retry {run_id}: the run changed meanwhile; try again")
    for start in range(0, len(rest), MAX_OPS):
        client.txn([], rest[start : start + MAX_OPS], "retry: skips")
    if skipped:
        flow.drain(client, keys, run_id, now=now)
        flow.maybe_end(client, keys, run_id, now=now)


def _reset_arrivals(
    client: c.Client, keys: Keys, run_id: str, recs: Recs, chosen: set[str]
) -> dict[str, int]:
    """For each wide task to re-run: forget the arrivals of the dependencies that re-run
    (their counter restarts); returns how many arrivals each now waits for."""
    targets: dict[str, int] = {}
    doomed: list[str] = []
    for task_id in chosen:
        rec = recs[task_id][1]
        if not rec.get("wide"):
            continue
        again = [d for d in dict.fromkeys(rec["spec"].get("depends", [])) if d in chosen]
        targets[task_id] = len(again)
        doomed += [keys.arrived(run_id, task_id, d) for d in again]
        doomed += [keys.arrivals(run_id, task_id), keys.join(run_id, task_id)]
    for start in range(0, len(doomed), MAX_OPS):
        client.txn([], [c.delete(k) for k in doomed[start : start + MAX_OPS]], "retry: arrivals")
    return targets


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """A retry of a run: the tasks chosen to re-run, every task's record, and the arrivals
    each wide task to re-run now waits for."""

    run_id: str
    chosen: set[str]
    recs: Recs
    targets: dict[str, int] = field(default_factory=dict)
    now: float


def _reset(b: flow.Batch, keys: Keys, retry: Retry, rec: TaskRec) -> None:
    """Make a task to re-run pending again, or decide it now when it waits for nothing."""
    run_id, chosen, recs, targets = retry.run_id, retry.chosen, retry.recs, retry.targets
    task_id = rec["spec"]["id"]
    was_done = TaskState(rec["state"]).terminal  # its `done/` marker is there
    b.delete(keys.fail(run_id, task_id))
    rec.update({"state": TaskState.PENDING.value, "waiting_reason": None, "losses": 0})
    gates.reset(rec)  # if:, forEach: decided again
    for succ_id in rec.get("fan") or {}:
        if succ_id in targets:
            rec["fan"][succ_id] = targets[succ_id]
    waits = bool(targets.get(task_id)) if rec.get("wide") else False
    if not rec.get("wide"):
        rec["waiting"] = [d for d in rec["spec"].get("depends", []) if d in chosen]
        waits = bool(rec["waiting"])
    state = TaskState.PENDING
    if not waits:
        deps = [flow.dep_of(recs[d][1]) for d in rec["spec"].get("depends", [])]
        state = transitions.decide(When(rec["spec"].get("when", "success")), deps)
    if state is TaskState.SKIPPED:
        rec["state"] = TaskState.SKIPPED.value  # stays done: its marker is kept
        return
    b.delete(keys.done(run_id, task_id))
    if was_done:
        flow.count_done(b, keys, run_id, rec, added=False)
    if state is TaskState.READY:
        flow.enqueue(b, keys, run_id, rec, now=retry.now)


# ---------------------------------------------------------------------- reading runs


@dataclass
class RunCache:
    """Per store object: the task records of the runs last read, to read only what changed,
    and what their waiting reasons depend on."""

    tasks: dict[str, tuple[int, dict[str, tuple[int, TaskRecord]]]] = field(default_factory=dict)
    needs: dict[str, dict[str, cluster.Needs]] = field(default_factory=dict)  # run -> reasons
    wide: dict[str, dict[str, int]] = field(default_factory=dict)  # run -> wide tasks' deps
    lock: threading.Lock = field(default_factory=threading.Lock)


def get_run(ctx: Ctx, cache: RunCache, run_id: str, *, tasks: bool) -> Run:
    """The run with its tasks in plan order (see Store.get_run). Raises RunNotFound."""
    client, keys = ctx.client, ctx.keys
    with cache.lock:
        rev, known = cache.tasks.get(run_id, (0, {}))
    ops = [c.get(keys.run(run_id)), c.count(keys.done(run_id, ""))]
    if tasks and rev:  # the records changed since the last read, in the same round trip
        ops.append(c.changed_since(keys.task(run_id, ""), rev + 1, c.PAGE))
    responses, at = client.reads(ops, "get run")
    items = c.items_of(responses[:1])
    if not items:
        raise errors.RunNotFound(run_id)
    record = load_run(items[0].value)
    run = run_from_dict(record, done=int(responses[1].response_range.count))
    if record.get("group"):
        run = dataclasses.replace(run, waiting_reason=groups.waiting_reason(client, keys, record))
    if not tasks:
        return run
    if record.get("hook_ends"):
        run = dataclasses.replace(run, hooks=hooks.statuses(ctx, run_id))
    if rev and not responses[2].response_range.more:
        changed = c.items_of(responses[2:])
    else:  # the first read of the run, or many changes: page through them
        changed, at = client.scan_at(keys.task(run_id, ""), min_mod=rev + 1 if rev else 0)
    records = merge_records(cache, run_id, known, changed, at)
    needs = cache.needs.get(run_id, {})
    records = cluster.with_reasons(client, keys, records, needs)
    return dataclasses.replace(run, tasks=count_arrivals(ctx, cache, run_id, records))


def count_arrivals(
    ctx: Ctx, cache: RunCache, run_id: str, records: tuple[TaskRecord, ...]
) -> tuple[TaskRecord, ...]:
    """Pending wide tasks with how many dependencies they still wait for (their records
    do not change as dependencies arrive: the `arr/` markers are counted)."""
    wide = cache.wide.get(run_id, {})
    pending = [r.id for r in records if r.id in wide and r.state is TaskState.PENDING]
    if not pending:
        return records
    arrived = ctx.client.counts([ctx.keys.arrived(run_id, t) for t in pending])
    left = {t: wide[t] - n for t, n in zip(pending, arrived, strict=True)}
    return tuple(
        dataclasses.replace(
            r, waiting_reason=waiting_reason({"state": "pending", "wide": left[r.id]})
        )
        if r.id in left
        else r
        for r in records
    )


def merge_records(
    cache: RunCache,
    run_id: str,
    known: dict[str, tuple[int, TaskRecord]],
    changed: list[c.Item],
    at: int,
) -> tuple[TaskRecord, ...]:
    """The run's task records in plan order: `known` (read at an earlier revision) updated
    with the records `changed` since, as of revision `at`. Followers call get_run on every
    change, so only the records modified since this object's last read are fetched."""
    known = dict(known)
    for item in changed:
        d: TaskRec = loads(item.value)
        known[item.key] = (int(d["order"]), task_record(d, item.mod))
        if (need := cluster.needs_of(d["spec"])) is not None:
            cache.needs.setdefault(run_id, {})[d["spec"]["id"]] = need
        if d.get("wide"):
            cache.wide.setdefault(run_id, {})[d["spec"]["id"]] = int(d["wide"])
    with cache.lock:
        if at >= cache.tasks.get(run_id, (0, {}))[0]:
            cache.tasks.pop(run_id, None)
            cache.tasks[run_id] = (at, known)
        while len(cache.tasks) > RUNS_CACHED:
            oldest = next(iter(cache.tasks))
            cache.tasks.pop(oldest)
            cache.needs.pop(oldest, None)
            cache.wide.pop(oldest, None)
    return tuple(r for _, r in sorted(known.values(), key=lambda x: x[0]))


def list_runs(ctx: Ctx, *, workflow: str | None, limit: int | None) -> list[Run]:
    """Runs newest first (created_at, then id), without tasks."""
    found: list[RunRec] = [loads(i.value) for i in ctx.client.scan(ctx.keys.runs())]
    found = [r for r in found if workflow is None or r["workflow"] == workflow]
    found.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    found = found[:limit] if limit is not None else found
    done = ctx.client.counts([ctx.keys.done(r["id"], "") for r in found])
    return [
        run_from_dict(r, done=n)
        if not r.get("group")
        else dataclasses.replace(
            run_from_dict(r, done=n),
            waiting_reason=groups.waiting_reason(ctx.client, ctx.keys, r),
        )
        for r, n in zip(found, done, strict=True)
    ]


def end_run(ctx: Ctx, run_id: str, state: RunState, reason: str, *, now: float) -> list[str]:
    """Flip an unfinished run to `state`, then cancel its unstarted tasks (their ids)."""
    client, keys = ctx.client, ctx.keys
    for _ in range(100):
        item = client.get(keys.run(run_id))
        if item is None:
            raise errors.RunNotFound(run_id)
        run: RunRec = loads(item.value)
        if RunState(run["state"]).terminal:
            return []
        run.update({"state": state.value, "reason": reason, "finished_at": now, "halted": True})
        recorded = hooks.ended_ops(keys, run, now=now)  # the outbox, in the ending txn
        ops = [
            c.put(item.key, dumps(run)),
            c.delete(keys.active(run_id)),
            c.put(keys.ending(run_id), state.value),
            *recorded,
            *groups.leave_ops(keys, run),
        ]
        if client.txn([c.mod_is(item.key, item.mod)], ops, "end run").succeeded:
            return flow.cancel_unstarted(client, keys, run_id)
    raise errors.StoreError(f"cancel {run_id}: too much contention")
