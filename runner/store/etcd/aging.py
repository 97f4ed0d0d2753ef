"""Priority aging on etcd (`spec.aging`, docs/WORKFLOW.md "Fairness").

The queue is ordered by its keys (`queue/{10**9 - priority}/{ready time}/...`), so a claim
walks it from the head and never sorts. A queued task of an aging run has an index key
`aged/{run}/{task}`; `promote` (part of every sweep) moves each such entry to the key of its
effective priority, priority + by * floor(waited / every), when that has grown. Cost: one
read of the index and of each indexed task per sweep, a write only when a task crosses a
step; the order is exact at each sweep (SQLite computes it at each claim instead).
"""

from __future__ import annotations

import math

from runner.models import TaskState
from runner.store.etcd import client as c
from runner.store.etcd.keys import PRIORITY_BIAS, Keys
from runner.store.etcd.records import TaskRec, dumps, load_task


def effective(priority: int, *, waited: float, every: float, by: int) -> int:
    """The priority of a task that has waited `waited` seconds in the queue."""
    return priority + by * max(0, math.floor(waited / every))


def promote(client: c.Client, keys: Keys, *, now: float) -> float:
    """Re-key the aged queue entries whose effective priority grew; when the next one is due
    (infinity when none is queued)."""
    soonest = math.inf
    for index in client.scan(keys.aged(), keys_only=True):
        run_id, task_id = keys.split(index.key, "aged")
        item = client.get(keys.task(run_id, task_id))
        rec = None if item is None else load_task(item.value)
        qkey = None if rec is None else rec.get("qkey")
        if item is None or rec is None or qkey is None or "age" not in rec:
            client.txn([c.mod_is(index.key, index.mod)], [c.delete(index.key)], "aging: drop")
            continue
        if rec["state"] != TaskState.READY.value or not qkey.startswith(keys.queue()):
            continue  # a retry not yet due, or assigned by a dispatcher
        every, by = float(rec["age"][0]), int(rec["age"][1])
        ready_at = float(rec.get("ready_at") or now)
        base = int(rec["spec"].get("priority", 0))
        want = effective(base, waited=now - ready_at, every=every, by=by)
        steps = (want - base) // by
        soonest = min(soonest, ready_at + (steps + 1) * every)
        have = PRIORITY_BIAS - int(keys.split(qkey, "queue")[0])
        if want > have:
            _rekey(client, keys, item, rec, want, run_id=run_id)
    return soonest


def _rekey(
    client: c.Client, keys: Keys, item: c.Item, rec: TaskRec, want: int, *, run_id: str
) -> None:
    """Move the task's queue entry to the key of priority `want` (nothing when it changed)."""
    old = rec.get("qkey") or ""
    entry = client.get(old)
    if entry is None:
        return
    ready_at, order = float(rec["ready_at"] or 0.0), int(rec["order"])
    new = keys.queue_entry(want, ready_at, order, run_id, rec["spec"]["id"])
    rec["qkey"] = new
    compares = [c.mod_is(item.key, item.mod), c.mod_is(old, entry.mod)]
    ops = [c.delete(old), c.put(new, entry.value), c.put(item.key, dumps(rec))]
    client.txn(compares, ops, "aging: promote")
