"""How a run moves on etcd: queueing, terminal tasks, successors, cancellation, the run's end.

Helpers add compares and operations to a `Batch` (one transaction) using the pure rules of
`runner.transitions`. Work too large for one transaction (a task with hundreds of
successors, cancelling a 100,000-task run) goes through marker keys (`prop/`, `ending/`) that
any process drains idempotently, so a crash half-way leaves a marker, never a half-done step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner import transitions
from runner.models import AttemptState, Outcome, Reason, RunState, TaskSpec, TaskState, When
from runner.store.etcd import client as c
from runner.store.etcd import cluster, hooks
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import (
    ArrivalRec,
    QueueEntry,
    RunRec,
    TaskRec,
    dumps,
    load_arrival,
    load_run,
    load_task,
)

UNSTARTED = (TaskState.PENDING.value, TaskState.READY.value, TaskState.RETRYING.value)
PER_TXN = 30  # tasks per transaction: 4 operations each stays under etcd's 128
# A task with more dependencies than this is *wide*: it has no `waiting` list, which every
# dependency's finish would rewrite (a hot key, and O(n^2) bytes: a 100,000-way join's list
# alone passes etcd's request limit); its dependencies' arrivals are counted instead.
WIDE = 30


@dataclass
class Batch:
    """The compares and operations of one transaction."""

    compares: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)
    arrivals: list[Any] = field(default_factory=list)  # the arrival ops among `ops`
    tallied: set[str] = field(default_factory=set)  # the `dcnt/` keys `tally_op` puts
    tally_op: Any = None  # one nested transaction (one operation) holding those puts

    def guard(self, key: str, mod: int) -> None:
        self.compares.append(c.mod_is(key, mod))

    def put(self, key: str, value: Any, lease: int = 0) -> None:
        self.ops.append(c.put(key, value if isinstance(value, bytes) else dumps(value), lease))

    def delete(self, key: str) -> None:
        self.ops.append(c.delete(key))


def enqueue(
    b: Batch, keys: Keys, run_id: str, rec: TaskRec, *, now: float, not_before: float = 0.0
) -> None:
    """Queue a task (`retrying` until `not_before` when that is in the future); a task with
    `if:` or forEach gets a `gate/` marker instead (see `hold`)."""
    if hold(b, keys, run_id, rec):
        return
    spec = rec["spec"]
    ready = max(now, not_before)
    qkey = keys.queue_entry(int(spec.get("priority", 0)), ready, rec["order"], run_id, spec["id"])
    rec["state"] = TaskState.RETRYING.value if not_before > now else TaskState.READY.value
    rec["ready_at"] = ready
    rec["qkey"] = qkey
    entry: QueueEntry = {"nb": not_before, "sel": spec.get("selector") or {}}
    if spec.get("mutex") or spec.get("semaphore"):
        entry["lk"] = cluster.spec_locks(spec)
    if rec.get("dsp"):
        entry["dsp"] = rec["dsp"]
    b.put(qkey, entry)
    if rec.get("age"):  # spec.aging: indexed for `aging.promote`
        b.put(keys.aged(run_id, spec["id"]), b"1")


def hold(b: Batch, keys: Keys, run_id: str, rec: TaskRec) -> bool:
    """Instead of queueing a task with `if:` or forEach, or an expanded forEach task whose
    instances are done, mark it for `gates.drain` (True); False for any other task."""
    gate = rec.get("gate")
    spec = rec["spec"]
    if gate is None and ("if" in spec or "forEach" in spec):
        rec["gate"] = "open"
    elif gate == "expanded":
        rec["gate"] = "joined"
    else:
        return False
    b.put(keys.gate(run_id, spec["id"]), b"1")
    return True


def terminal(b: Batch, keys: Keys, run_id: str, rec: TaskRec, state: TaskState) -> bool:
    """Make a task terminal; True when it has successors to advance."""
    spec = rec["spec"]
    was_done = TaskState(rec["state"]).terminal  # its marker is there already
    rec["state"] = state.value
    if rec.get("qkey"):
        b.delete(rec.pop("qkey"))
    b.put(keys.done(run_id, spec["id"]), b"1")
    if not was_done:
        count_done(b, keys, run_id, rec, added=True)
    if transitions.counts_as_failure(state, bool(spec.get("allowFailure"))):
        b.put(keys.fail(run_id, spec["id"]), b"1")
    return bool(rec.get("succ"))


TALLY_SHARDS = 128  # `dcnt/{run}/p…` keys: a request's finishes of a run put different ones


def count_done(b: Batch, keys: Keys, run_id: str, rec: TaskRec, *, added: bool) -> None:
    """Count a `done/` marker of run `run_id` put (`added`) or deleted in `b`'s transaction:
    a put of one of the run's tally keys, whose version (the puts since it was created) is
    the count, so concurrent finishes never conflict on it (no compare on it). The shard is
    the task's plan order modulo TALLY_SHARDS, the next free one when `b` already writes it
    (etcd rejects a key written twice in one request; `finish._Layers` keeps finishes that
    write the same one apart). The puts go in one nested transaction without compares, one
    operation of `b` however many tasks it makes terminal (a chunk of PER_TXN tasks stays
    under etcd's 128 operations per level). The run's count is the sum of its `p` keys'
    versions less the sum of its `m` keys' (`tallied`): a range of at most 2 × TALLY_SHARDS
    keys, where counting the `done/` keys themselves visits every one of them (etcd 3.4)."""
    sign = "p" if added else "m"
    start = int(rec.get("order", 0))
    for i in range(TALLY_SHARDS):
        key = keys.tally(run_id, f"{sign}{(start + i) % TALLY_SHARDS:03d}")
        if key not in b.tallied:
            b.tallied.add(key)
            if b.tally_op is None:
                b.tally_op = c.nested([], [])
                b.ops.append(b.tally_op)  # filled in place until the request is built
            b.tally_op.request_txn.success.append(c.put(key, b"1"))
            return
    raise AssertionError(f"more than {TALLY_SHARDS} done markers of one run in one batch")


def tallied(kvs: Any) -> int:
    """The `done/` markers a run's tally keys count, from a keys-only range read of
    `keys.tally(run)` (a RangeResponse's `kvs`)."""
    total = 0
    for kv in kvs:
        sign = kv.key.rsplit(b"/", 1)[1][:1]
        total += int(kv.version) if sign == b"p" else -int(kv.version) if sign == b"m" else 0
    return total


def dep_of(rec: TaskRec) -> transitions.DepState:
    return (TaskState(rec["state"]), bool(rec["spec"].get("allowFailure")))


def narrow_succ(rec: TaskRec) -> list[str]:
    """The successors of a task that keep a `waiting` list (the others are wide)."""
    fan = rec.get("fan") or {}
    return [s for s in rec.get("succ", []) if s not in fan]


def arrive(
    b: Batch, keys: Keys, run_id: str, done: TaskRec, *, only: set[str] | None = None
) -> None:
    """Count the terminal task `done` at its wide successors (`only` those): once per
    dependency (`arr/` absent), each adds a write to the successor's counter (`cnt/`); the
    arrival that finds the counter one short of its target writes a `join/` marker, so exactly
    one transaction learns that all have arrived (etcd evaluates nested compares before any
    write: no hot key to compare, no conflicts between arrivals)."""
    state: ArrivalRec = {"st": done["state"], "af": bool(done["spec"].get("allowFailure"))}
    done_id = done["spec"]["id"]
    for succ_id, target in (done.get("fan") or {}).items():
        if only is not None and succ_id not in only:
            continue
        counter = keys.arrivals(run_id, succ_id)
        last = c.nested(
            [c.version_is(counter, int(target) - 1)], [c.put(keys.join(run_id, succ_id), b"1")]
        )
        mark = keys.arrived(run_id, succ_id, done_id)
        op = c.nested(
            [c.created_at(mark, 0)], [c.put(mark, dumps(state)), c.put(counter, b"1"), last]
        )
        b.ops.append(op)
        b.arrivals.append(op)


def joined(b: Batch, responses: list[Any]) -> bool:
    """Whether a committed transaction of `b` wrote a `join/` marker (an arrival was last)."""
    at = [i for i, op in enumerate(b.ops) if any(op is a for a in b.arrivals)]
    for i in at:
        inner = responses[i].response_txn
        if inner.succeeded and inner.responses[2].response_txn.succeeded:
            return True
    return False


def advance(
    b: Batch,
    keys: Keys,
    run: RunRec,
    done_id: str,
    succs: dict[str, tuple[c.Item, TaskRec]],
    dep_state: Callable[[str], transitions.DepState],
    *,
    now: float,
) -> None:
    """Count `done_id` off its (narrow) successors; queue or skip those whose dependencies are
    now all terminal (a skipped one with successors gets a `prop/` marker: skips cascade)."""
    run_id = run["id"]
    halted = run.get("halted") or RunState(run["state"]).terminal
    for item, rec in succs.values():
        if rec["state"] != TaskState.PENDING.value or done_id not in rec["waiting"]:
            continue
        rec["waiting"].remove(done_id)
        b.guard(item.key, item.mod)
        if not rec["waiting"]:
            deps = [dep_state(d) for d in rec["spec"].get("depends", [])]
            state = transitions.decide(When(rec["spec"].get("when", "success")), deps)
            if halted:
                state = TaskState.CANCELLED
            if state is TaskState.READY:
                enqueue(b, keys, run_id, rec, now=now)
            elif terminal(b, keys, run_id, rec, state):
                b.put(keys.prop(run_id, rec["spec"]["id"]), b"1")
        b.put(item.key, rec)


def freed_deps(done_id: str, succs: dict[str, tuple[c.Item, TaskRec]]) -> set[str]:
    """Dependencies (other than `done_id`) of the successors this completion frees."""
    out: set[str] = set()
    for _, rec in succs.values():
        if rec["state"] == TaskState.PENDING.value and rec["waiting"] == [done_id]:
            out.update(d for d in rec["spec"].get("depends", []) if d != done_id)
    return out


# ---------------------------------------------------------------------- multi-txn work


def drain(client: c.Client, keys: Keys, run_id: str, *, now: float) -> None:
    """Decide every wide task with a `join/` marker and advance the successors of every task
    with a `prop/` marker in the run, in batches, until none is left (each may make more)."""
    from runner.store.etcd import gates  # it builds on this module

    last: set[tuple[str, int]] = set()
    for _ in range(10_000):
        heads = [keys.join(run_id, ""), keys.prop(run_id, ""), keys.gate(run_id, "")]
        responses, _ = client.reads([c.head(k, 0) for k in heads], "markers")
        joins, props = c.items_of(responses[:1]), c.items_of(responses[1:2])
        held = c.items_of(responses[2:])
        seen = {(m.key, m.mod) for m in joins + props + held}
        if not seen or seen == last:
            return  # done, or nothing moved (a join/ marker that cannot be decided yet)
        last = seen
        for marker in joins:
            _decide_join(client, keys, run_id, marker, now=now)
        for marker in props:
            _drain_one(client, keys, run_id, marker, now=now)
        gates.drain(client, keys, run_id, held, now=now)


def _drain_one(client: c.Client, keys: Keys, run_id: str, marker: c.Item, *, now: float) -> None:
    done_id = keys.split(marker.key, "prop")[1]
    found, _ = client.read_many([keys.task(run_id, done_id), keys.run(run_id)])
    task, run = found.get(keys.task(run_id, done_id)), found.get(keys.run(run_id))
    if task is None or run is None:
        client.txn([c.mod_is(marker.key, marker.mod)], [c.delete(marker.key)], "prop")
        return
    done_rec = load_task(task.value)
    succ = done_rec.get("succ", [])
    parts = [succ[i : i + PER_TXN] for i in range(0, len(succ), PER_TXN)] or [[]]
    fan = done_rec.get("fan") or {}
    for i, part in enumerate(parts):
        while True:
            b = Batch()
            b.guard(marker.key, marker.mod)
            succs = read_tasks(client, keys, run_id, [s for s in part if s not in fan])
            freed = freed_deps(done_id, succs)
            deps = dep_reader(client, keys, run_id, freed, known={done_id: done_rec})
            advance(b, keys, load_run(run.value), done_id, succs, deps, now=now)
            arrive(b, keys, run_id, done_rec, only={s for s in part if s in fan})
            if i == len(parts) - 1:
                b.delete(marker.key)
            if client.txn(b.compares, b.ops, "advance successors").succeeded:
                break
            if client.get(marker.key) is None:
                return  # another process drained it


def _decide_join(client: c.Client, keys: Keys, run_id: str, marker: c.Item, *, now: float) -> None:
    """Queue or skip a wide task whose dependencies have all arrived (their states are in
    the `arr/` markers), and clear its `join/` marker; compared on the task's record."""
    task_id = keys.split(marker.key, "join")[1]
    for _ in range(100):
        found, _ = client.read_many([keys.task(run_id, task_id), keys.run(run_id)])
        item, run_item = found.get(keys.task(run_id, task_id)), found.get(keys.run(run_id))
        b = Batch()
        b.guard(marker.key, marker.mod)
        b.delete(marker.key)
        if item is not None and run_item is not None:
            rec, run = load_task(item.value), load_run(run_item.value)
            if rec["state"] == TaskState.PENDING.value:
                states = {
                    keys.split(a.key, "arr")[2]: load_arrival(a.value)
                    for a in client.scan(keys.arrived(run_id, task_id))
                }
                depends = list(dict.fromkeys(rec["spec"].get("depends", [])))
                if any(d not in states for d in depends):
                    return  # not expected (the counter counts these markers): left as it is
                deps = [(TaskState(states[d]["st"]), bool(states[d]["af"])) for d in depends]
                state = transitions.decide(When(rec["spec"].get("when", "success")), deps)
                if run.get("halted") or RunState(run["state"]).terminal:
                    state = TaskState.CANCELLED
                if state is TaskState.READY:
                    enqueue(b, keys, run_id, rec, now=now)
                elif terminal(b, keys, run_id, rec, state):
                    b.put(keys.prop(run_id, task_id), b"1")
                b.guard(item.key, item.mod)
                b.put(item.key, rec)
        if client.txn(b.compares, b.ops, "decide join").succeeded:
            return
        if client.get(marker.key) is None:
            return  # another process decided it


def read_tasks(
    client: c.Client, keys: Keys, run_id: str, task_ids: list[str]
) -> dict[str, tuple[c.Item, TaskRec]]:
    found, _ = client.read_many(keys.task(run_id, t) for t in task_ids)
    return {
        t: (found[k], load_task(found[k].value))
        for t in task_ids
        if (k := keys.task(run_id, t)) in found
    }


def dep_reader(
    client: c.Client,
    keys: Keys,
    run_id: str,
    ids: set[str],
    known: dict[str, TaskRec] | None = None,
) -> Callable[[str], transitions.DepState]:
    """A lookup of dependency states: `known` records first, the rest read now."""
    recs: dict[str, TaskRec] = dict(known or {})
    missing = [i for i in ids if i not in recs]
    if missing:
        recs.update({t: rec for t, (_, rec) in read_tasks(client, keys, run_id, missing).items()})
    return lambda dep_id: dep_of(recs[dep_id])


def cancel_unstarted(client: c.Client, keys: Keys, run_id: str) -> list[str]:
    """Cancel every pending, ready and retrying task of a halted run; clear its `ending/`
    marker. Returns the task ids it cancelled."""
    cancelled: list[str] = []
    for _ in range(1000):
        items = [
            i
            for i in client.scan(keys.task(run_id, ""))
            if load_task(i.value)["state"] in UNSTARTED
        ]
        if not items:
            break
        for start in range(0, len(items), PER_TXN):
            b = Batch()
            ids = []
            for item in items[start : start + PER_TXN]:
                rec = load_task(item.value)
                b.guard(item.key, item.mod)
                terminal(b, keys, run_id, rec, TaskState.CANCELLED)
                b.put(item.key, rec)
                ids.append(rec["spec"]["id"])
            if client.txn(b.compares, b.ops, "cancel tasks").succeeded:
                cancelled.extend(ids)
    client.txn([], [c.delete(keys.ending(run_id))], "ending")
    return cancelled


def maybe_end(client: c.Client, keys: Keys, run_id: str, *, now: float) -> None:
    """End a running run whose tasks are all terminal, by `transitions.run_outcome`. A run
    with a task owned (claimed, not finished: its `own/` key is there) has not ended: that
    read is cheap where counting `done/` is O(run) (every sweep settles every active run)."""
    for _ in range(100):
        responses, _ = client.reads(
            [c.get(keys.run(run_id)), c.head(keys.own(run_id, ""), 1)], "run and an owned task"
        )
        found = c.items_of(responses[:1])
        if not found or c.items_of(responses[1:]):
            return
        run_item = found[0]
        run = load_run(run_item.value)
        if RunState(run["state"]).terminal:
            return
        done, failed = client.counts([keys.done(run_id, ""), keys.fail(run_id, "")])
        if done < int(run["tasks_total"]):
            return
        outcome = transitions.run_outcome([(TaskState.FAILED, False)] * failed)
        run.update({"state": outcome.value, "finished_at": now})
        recorded = hooks.ended_ops(keys, run, now=now)  # the outbox, in the ending txn
        ops = [c.put(run_item.key, dumps(run)), c.delete(keys.active(run_id)), *recorded]
        if group := run.get("group"):
            ops.append(c.delete(keys.group(group, run_id)))
        if client.txn([c.mod_is(run_item.key, run_item.mod)], ops, "end run").succeeded:
            return


# ---------------------------------------------------------------------- terminal tasks


def complete(
    b: Batch, keys: Keys, run_item: c.Item, run: RunRec, rec: TaskRec, state: TaskState
) -> bool:
    """A task became terminal: markers, failFast; True when its successors need advancing."""
    has_succ = terminal(b, keys, run["id"], rec, state)
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
    spec: TaskSpec, rec: TaskRec, run: RunRec, outcome: Outcome
) -> tuple[TaskState, float | None]:
    """The task's next state and, for a retry, its backoff."""
    if RunState(run["state"]).terminal or outcome.reason is Reason.CANCELLED:
        return TaskState.CANCELLED, None
    if outcome.succeeded:
        return TaskState.SUCCEEDED, None
    failed = 1 + sum(1 for a in rec["attempts"][:-1] if a["state"] == AttemptState.FAILED.value)
    delay = transitions.retry_delay(spec, failed, outcome.reason)
    return (TaskState.RETRYING, delay) if delay is not None else (TaskState.FAILED, None)


def settle(client: c.Client, keys: Keys, run_id: str, *, now: float) -> None:
    """Drain the run's markers, then end it when every task is terminal."""
    drain(client, keys, run_id, now=now)
    maybe_end(client, keys, run_id, now=now)
