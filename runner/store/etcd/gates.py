"""`if:` conditions and forEach expansion on etcd (docs/ARCHITECTURE.md, "etcd data model").

A task with a condition or a forEach is never queued straight away: where another task would
be queued (`flow.enqueue`), it gets a `gate/{run}/{task}` marker instead, and `drain` decides
it in transactions of its own, like `prop/` markers (any process may, idempotently):

- `open`: the condition is false -> skipped (its reason in the record's `why`); it holds and
  there is no forEach -> queued (`passed`); a forEach -> expanded: the instance records
  (`name[i=N]`, pending, the task as their successor) are written in chunks, each guarded by
  its first key being absent; then one transaction makes the task wait for them (`expanded`:
  `depends` the instance ids, `when` always, `waiting` or `wide` as in `runs.task_records`)
  and adds them to the run's `tasks_total`; then they are queued in chunks, and the marker goes.
- `joined`: the expanded task's instances are all terminal -> it succeeds, or fails when one
  of them failed (not allowed to).
"""

from __future__ import annotations

from typing import Any

from runner import conditions, foreach
from runner.models import RunState, TaskSpec, TaskState
from runner.store.etcd import client as c
from runner.store.etcd import flow
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import RunRec, TaskRec, dumps, load_run, load_task

CHUNK_BYTES = 1024 * 1024  # instance records per transaction: under etcd's 1.5 MiB
CHUNK_OPS = 100  # and its 128 operations


def drain(client: c.Client, keys: Keys, run_id: str, markers: list[c.Item], *, now: float) -> None:
    """Decide every gated task with a marker (see the module docstring)."""
    for marker in markers:
        task_id = keys.split(marker.key, "gate")[1]
        for _ in range(100):
            if _step(client, keys, run_id, task_id, marker, now=now):
                break
            marker = client.get(marker.key)  # type: ignore[assignment]
            if marker is None:
                break  # another process decided it


def _step(
    client: c.Client, keys: Keys, run_id: str, task_id: str, marker: c.Item, *, now: float
) -> bool:
    """One try at the gated task; False when a compare failed (read again and retry)."""
    found, _ = client.read_many([keys.task(run_id, task_id), keys.run(run_id)])
    item, run_item = found.get(keys.task(run_id, task_id)), found.get(keys.run(run_id))
    b = flow.Batch()
    b.guard(marker.key, marker.mod)
    if item is None or run_item is None:
        b.delete(marker.key)
        return client.txn(b.compares, b.ops, "gate").succeeded
    rec, run = load_task(item.value), load_run(run_item.value)
    b.guard(item.key, item.mod)
    gate = rec.get("gate")
    if rec["state"] != TaskState.PENDING.value:
        b.delete(marker.key)
        return client.txn(b.compares, b.ops, "gate").succeeded
    if gate == "expanded":
        return _queue_instances(client, keys, run_id, rec, marker, now=now)
    if run.get("halted") or RunState(run["state"]).terminal:
        state, why = TaskState.CANCELLED, ""
    elif gate == "joined":
        state, why = _joined(client, keys, run_id, rec), ""
    else:
        state, why = _decide(client, keys, run, rec)
    if state is TaskState.READY and rec["spec"].get("forEach"):
        return _expand(client, keys, run_item, rec, item, marker)
    return _end(client, keys, b, run_item, run, rec, item, state, why, now=now)


def _decide(client: c.Client, keys: Keys, run: RunRec, rec: TaskRec) -> tuple[TaskState, str]:
    spec = TaskSpec.from_dict(rec["spec"])
    if spec.if_ is None:
        return TaskState.READY, ""
    names = sorted(conditions.output_names(spec.if_))
    recs = flow.read_tasks(client, keys, run["id"], names)
    ok, why = conditions.holds(
        spec.if_,
        run_id=run["id"],
        params=run["params"],
        matrix=spec.matrix,
        outputs={n: r["outputs"] for n, (_, r) in recs.items()},
        item=spec.item,
    )
    return (TaskState.READY, "") if ok else (TaskState.SKIPPED, why)


def _end(
    client: c.Client,
    keys: Keys,
    b: flow.Batch,
    run_item: c.Item,
    run: RunRec,
    rec: TaskRec,
    item: c.Item,
    state: TaskState,
    why: str,
    *,
    now: float,
) -> bool:
    """Queue the task (its gate passed) or make it terminal; the marker goes."""
    run_id = run["id"]
    b.delete(keys.gate(run_id, rec["spec"]["id"]))
    halted = bool(run.get("halted"))
    if state is TaskState.READY:
        rec["gate"] = "passed"
        flow.enqueue(b, keys, run_id, rec, now=now)
    else:
        if why:
            rec["why"] = why
        b.guard(run_item.key, run_item.mod)
        if flow.complete(b, keys, run_item, run, rec, state):
            b.put(keys.prop(run_id, rec["spec"]["id"]), b"1")
    b.put(item.key, rec)
    if not client.txn(b.compares, b.ops, "gate").succeeded:
        return False
    if run.get("halted") and not halted:  # this failure tripped failFast
        flow.cancel_unstarted(client, keys, run_id)
    return True


def _items(client: c.Client, keys: Keys, run_id: str, spec: TaskSpec) -> list[Any] | str:
    """The forEach items, or the reason the task fails."""
    assert spec.for_each is not None
    producer = flow.read_tasks(client, keys, run_id, [spec.for_each.task])
    outputs = producer[spec.for_each.task][1]["outputs"] if producer else None
    try:
        return foreach.items_of(spec.for_each, outputs)
    except foreach.ForEachError as exc:
        return str(exc)


def _expand(
    client: c.Client, keys: Keys, run_item: c.Item, rec: TaskRec, item: c.Item, marker: c.Item
) -> bool:
    """Write the instances (chunks), then make the task wait for them (one transaction)."""
    run = load_run(run_item.value)
    run_id = run["id"]
    spec = TaskSpec.from_dict(rec["spec"])
    items = _items(client, keys, run_id, spec)
    if isinstance(items, str):
        b = flow.Batch()
        b.guard(marker.key, marker.mod)
        b.guard(item.key, item.mod)
        return _end(client, keys, b, run_item, run, rec, item, TaskState.FAILED, items, now=0.0)
    instances = foreach.instances(spec, items)
    ids = [t["id"] for t in instances]
    # A task that was wide already has its dependencies' arrivals on its counter: the
    # instances' arrivals add to them.
    before = int(rec.get("wide", 0))
    wide = len(ids) > flow.WIDE or before > 0
    target = before + len(ids) if wide else 0
    first = int(run["tasks_total"])  # after every task so far, in item order (as on SQLite)
    _write_instances(client, keys, run_id, rec, instances, target=target, first=first)
    rec["gate"] = "expanded"
    rec["spec"]["depends"] = ids
    rec["spec"]["when"] = "always"  # its state comes from its instances' (`_joined`)
    if wide:
        rec.pop("waiting", None)
        rec["wide"] = before + len(ids)
    else:
        rec["waiting"] = ids
    run["tasks_total"] = int(run["tasks_total"]) + len(ids)
    b = flow.Batch()
    b.guard(marker.key, marker.mod)
    b.guard(item.key, item.mod)
    b.guard(run_item.key, run_item.mod)
    if not ids:  # nothing to wait for: joined at once
        rec["gate"] = "joined"
    b.put(item.key, rec)
    b.put(run_item.key, run)
    b.put(marker.key, b"2")  # a new revision: `flow.drain` sees the marker moved
    return client.txn(b.compares, b.ops, "forEach: wait for instances").succeeded


def _write_instances(
    client: c.Client,
    keys: Keys,
    run_id: str,
    rec: TaskRec,
    specs: list[dict[str, Any]],
    *,
    target: int,
    first: int,
) -> None:
    """Instance records in chunks; a chunk whose first key exists was written already.
    `target`: the arrivals the wide expanded task waits for (0: it is narrow); `first`:
    the plan order of the first instance."""
    task_id = rec["spec"]["id"]
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for n, t in enumerate(specs):
        inst: TaskRec = {
            "order": first + n,
            "spec": t,
            "state": TaskState.PENDING.value,
            "attempts": [],
            "outputs": {},
            "losses": 0,
            "ready_at": None,
            "succ": [task_id],
            "refs": list(rec.get("refs", [])),
            "waiting": [],
        }
        if target:
            inst["fan"] = {task_id: target}
        if "dsp" in rec:
            inst["dsp"] = rec["dsp"]
        if "age" in rec:
            inst["age"] = rec["age"]
        value = dumps(inst)
        if chunk and (len(chunk) >= CHUNK_OPS or size + len(value) > CHUNK_BYTES):
            _put_chunk(client, chunk)
            chunk, size = [], 0
        chunk.append((keys.task(run_id, t["id"]), value))
        size += len(value)
    if chunk:
        _put_chunk(client, chunk)


def _put_chunk(client: c.Client, chunk: list[tuple[str, bytes]]) -> None:
    first = chunk[0][0]
    client.txn([c.created_at(first, 0)], [c.put(k, v) for k, v in chunk], "forEach: instances")


def _queue_instances(
    client: c.Client, keys: Keys, run_id: str, rec: TaskRec, marker: c.Item, *, now: float
) -> bool:
    """Queue the expanded task's instances still unqueued (chunks), then drop the marker."""
    ids = list(rec["spec"].get("depends", []))
    for start in range(0, len(ids), flow.PER_TXN):
        part = flow.read_tasks(client, keys, run_id, ids[start : start + flow.PER_TXN])
        b = flow.Batch()
        for inst_item, inst in part.values():
            if inst["state"] == TaskState.PENDING.value and not inst.get("qkey"):
                b.guard(inst_item.key, inst_item.mod)
                flow.enqueue(b, keys, run_id, inst, now=now)
                b.put(inst_item.key, inst)
        if b.ops and not client.txn(b.compares, b.ops, "forEach: queue instances").succeeded:
            return False
    b = flow.Batch()
    b.guard(marker.key, marker.mod)
    b.delete(marker.key)
    return client.txn(b.compares, b.ops, "forEach: queued").succeeded or True


def _joined(client: c.Client, keys: Keys, run_id: str, rec: TaskRec) -> TaskState:
    """An expanded task whose instances are all terminal: succeeded, or failed when one
    failed (not allowed to)."""
    ids = list(rec["spec"].get("depends", []))
    recs = flow.read_tasks(client, keys, run_id, ids)
    states = [flow.dep_of(r) for _, r in recs.values()]
    return foreach.state_of(states)


def reset(rec: TaskRec) -> None:
    """A gated task that `runner retry` re-runs: decided again (an expanded forEach task
    keeps its instances and waits for those that re-run)."""
    rec.pop("why", None)
    gate = rec.get("gate")
    if gate == "joined":
        rec["gate"] = "expanded"
    elif gate in ("open", "passed"):
        rec.pop("gate")
