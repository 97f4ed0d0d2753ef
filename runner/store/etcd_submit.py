"""Submit and retry runs on etcd within its limits (128 operations, 1.5 MiB per request).

A run's task records and first queue entries are written in chunks while the run record does
not exist; workers skip queue entries of runs they cannot read, so the run becomes visible in
one step when the last transaction writes its record. The chunks are independent, so several
are in flight at once (etcd commits concurrent requests with one disk sync).
"""

from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from runner import errors, transitions
from runner.models import Plan, Run, RunState, TaskState, When
from runner.store import etcd_client as c
from runner.store import etcd_flow as flow
from runner.store.etcd_keys import Keys, dumps, loads, run_to_dict

MAX_BYTES = 1024 * 1024  # per transaction, under etcd's 1.5 MiB request limit
MAX_OPS = 100
IN_FLIGHT = 8  # chunks sent at once (bounded: a 100,000-task run is not held in memory whole)


def task_records(plan: Plan) -> list[dict[str, Any]]:
    """The stored record of every task: spec, state, successors and output references."""
    succ: dict[str, list[str]] = defaultdict(list)
    by_name: dict[str, list[str]] = defaultdict(list)
    for t in plan.tasks:
        by_name[t.name].append(t.id)
        for d in t.depends:
            succ[d].append(t.id)
    ids = {t.id for t in plan.tasks}
    wide = {t.id: len(set(t.depends)) for t in plan.tasks if len(set(t.depends)) > flow.WIDE}
    out = []
    for i, t in enumerate(plan.tasks):
        refs = sorted(
            {r2 for r in transitions.output_refs(t) for r2 in ([r] if r in ids else by_name[r])}
        )
        rec: dict[str, Any] = {
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
            rec["wide"] = wide[t.id]  # arrivals are counted (see etcd_flow.arrive)
        else:
            rec["waiting"] = list(dict.fromkeys(t.depends))
        if fan := {s: wide[s] for s in succ[t.id] if s in wide}:
            rec["fan"] = fan  # its wide successors, with the arrivals each waits for
        out.append(rec)
    return out


def create_run(
    client: c.Client, keys: Keys, plan: Plan, *, run_id: str, now: float, key: str | None,
    scheduled_time: float | None, senders: ThreadPoolExecutor,
) -> Run:  # fmt: skip
    """Store a run (see Store.create_run)."""
    _check_new(client, keys, run_id, key)
    run = Run(
        id=run_id, workflow=plan.workflow, state=RunState.PENDING, params=dict(plan.params),
        created_at=now, key=key, scheduled_time=scheduled_time, plan_hash=plan.hash,
        tasks_total=len(plan.tasks),
    )  # fmt: skip
    deadline = None if plan.timeout is None else now + plan.timeout
    extra = {"fail_fast": plan.fail_fast, "parallelism": plan.parallelism, "halted": False,
             "dispatch": plan.dispatch}  # fmt: skip
    chunks = _Chunks(client, senders)
    batch = flow.Batch(compares=[c.created_at(keys.run(run_id), 0)])
    size = 0
    for rec in task_records(plan):
        if plan.dispatch:
            rec["dsp"] = plan.dispatch  # copied into its queue entries, for the dispatcher
        starts = not rec.get("waiting") and not rec.get("wide")
        if starts:
            flow.enqueue(batch, keys, run_id, rec, now=now)
        value = dumps(rec)
        if batch.ops and (len(batch.ops) + 2 > MAX_OPS or size + len(value) > MAX_BYTES):
            queued = batch.ops.pop() if starts else None  # this record's entry goes with it
            chunks.send(batch)
            batch, size = flow.Batch(compares=[c.created_at(keys.run(run_id), 0)]), 0
            if queued is not None:
                batch.ops.append(queued)
        size += len(value)
        batch.put(keys.task(run_id, rec["spec"]["id"]), value)
    chunks.send(batch)
    written = chunks.wait()
    final = flow.Batch(compares=[c.created_at(keys.run(run_id), 0)])
    final.put(keys.run(run_id), run_to_dict(run, extra))
    final.put(keys.active(run_id), {"deadline": deadline})
    if key is not None:
        final.compares.append(c.created_at(keys.run_key(key), 0))
        final.put(keys.run_key(key), run_id.encode())
    if not client.txn(final.compares, final.ops, "create run").succeeded:
        client.txn([], [c.delete(k) for k in written if "/queue/" in k], "undo")
        _check_new(client, keys, run_id, key)
        raise errors.RunExists(run_id, key or run_id)
    return run


class _Chunks:
    """A run's chunks in flight, at most IN_FLIGHT at once."""

    def __init__(self, client: c.Client, senders: ThreadPoolExecutor) -> None:
        self.client, self.senders = client, senders
        self.pending: deque[Future[list[str]]] = deque()
        self.written: list[str] = []

    def send(self, batch: flow.Batch) -> None:
        if not batch.ops:
            return
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
            self.written += sent.result()
        except BaseException:
            for other in self.pending:
                other.exception()  # the others end before the failure is raised
            self.pending.clear()
            raise

    def _write(self, batch: flow.Batch) -> list[str]:
        if not self.client.txn(batch.compares, batch.ops, "create run tasks").succeeded:
            raise errors.StoreError("create run: the run appeared while its tasks were written")
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
    run = loads(run_item.value)
    if not RunState(run["state"]).terminal:
        raise errors.UsageError(f"run {run_id} has not finished; only finished runs can be retried")
    items = sorted(client.scan(keys.task(run_id, "")), key=lambda i: loads(i.value)["order"])
    recs = {loads(i.value)["spec"]["id"]: (i, loads(i.value)) for i in items}
    again = [t for t, (_, r) in recs.items() if r["state"] in ("failed", "cancelled", "skipped")]
    if dry_run or not again:
        return again
    chosen = set(again)
    targets = _reset_arrivals(client, keys, run_id, recs, chosen)
    skipped: list[str] = []  # decided skipped again at once: their successors must hear of it
    for start in range(0, len(again), flow.PER_TXN):
        b = flow.Batch()
        for task_id in again[start : start + flow.PER_TXN]:
            item, rec = recs[task_id]
            _reset(b, keys, run_id, rec, chosen, recs, targets, now=now)
            if rec["state"] == TaskState.SKIPPED.value and rec.get("succ"):
                skipped.append(task_id)
            b.guard(item.key, item.mod)
            b.put(item.key, rec)
        if not client.txn(b.compares, b.ops, "retry tasks").succeeded:
            raise errors.StoreError(f"retry {run_id}: the run changed meanwhile; try again")
    _restart(client, keys, run_item, skipped, now=now)
    return again


def _restart(
    client: c.Client, keys: Keys, run_item: c.Item, skipped: list[str], *, now: float
) -> None:
    """Make the retried run running again, and advance the successors of the tasks the retry
    skipped again at once (`prop/` markers, written with the running run: a drain of a
    finished run would cancel them; the first ones in the same transaction)."""
    run = loads(run_item.value)
    run_id = run["id"]
    run.update(state=RunState.RUNNING.value, finished_at=None, reason=None, halted=False)
    ops = [c.put(run_item.key, dumps(run)), c.put(keys.active(run_id), dumps({"deadline": None}))]
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
    client: c.Client, keys: Keys, run_id: str, recs: dict[str, Any], chosen: set[str]
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


def _reset(
    b: flow.Batch, keys: Keys, run_id: str, rec: dict[str, Any], chosen: set[str],
    recs: dict[str, Any], targets: dict[str, int], *, now: float,
) -> None:  # fmt: skip
    task_id = rec["spec"]["id"]
    b.delete(keys.fail(run_id, task_id))
    rec.update(state=TaskState.PENDING.value, waiting_reason=None, losses=0)
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
    if state is TaskState.READY:
        flow.enqueue(b, keys, run_id, rec, now=now)
