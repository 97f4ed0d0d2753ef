"""Run hooks on etcd: the outbox of deliveries (see docs/HOOKS.md, docs/ARCHITECTURE.md).

The run record carries its plan's hooks (`RunRec.hooks`). The transaction that ends the run
(`flow.maybe_end`, `runs.end_run`: finish, cancel, timeout) also writes, through `ended_ops`,
one `hook/{run}/{index}` record per hook whose `on` matches and a `hookdue/{run}/{index}`
marker, so a delivery is recorded exactly once per run end (the end is compared on the run
record's mod revision). Deliverers scan the markers, take one with a compare on the record's
mod revision and a fresh token (`claim`), and record the result with that token (`finish`);
the marker goes when the delivery is delivered or given up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection

from runner import errors
from runner.models import HookDelivery, HookSpec, HookState, HookStatus, RunState
from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import HookRec, RunRec, dumps, loads

TRIES = 20  # claim/finish compare-and-set rounds before giving up on contention


def ended_ops(keys: Keys, run: RunRec, *, now: float) -> list[c.Op]:
    """The writes recording the deliveries due now that `run` (updated, not yet put) ended;
    bumps `run["hook_ends"]` when there are any."""
    state, reason = RunState(run["state"]), run.get("reason")
    return _ops(
        keys, run, lambda h: h.fires(state=state, reason=reason, run_key=run["key"]), now=now
    )


def missed_ops(keys: Keys, run: RunRec, *, now: float) -> list[c.Op]:
    """The writes recording the `missed_tick` deliveries of a schedule's latest run."""
    return _ops(keys, run, lambda h: h.fires_on_missed(run_key=run["key"]), now=now)


def _ops(keys: Keys, run: RunRec, fires: Callable[[HookSpec], bool], *, now: float) -> list[c.Op]:
    specs = [HookSpec.from_dict(h) for h in run.get("hooks") or ()]
    due = [(i, h) for i, h in enumerate(specs) if fires(h)]
    if not due:
        return []
    end = int(run.get("hook_ends", 0)) + 1
    run["hook_ends"] = end
    ops: list[c.Op] = []
    for i, h in due:
        rec: HookRec = {
            "index": i,
            "on": list(h.on),
            "kind": h.kind,
            "end": end,
            "state": HookState.DUE.value,
            "attempts": 0,
            "last_error": None,
            "due_at": now,
            "token": None,
            "holder": None,
            "expires_at": None,
        }
        ops.append(c.put(keys.hook(run["id"], i), dumps(rec)))
        ops.append(c.put(keys.hook_due(run["id"], i), b"1"))
    return ops


def statuses(ctx: Ctx, run_id: str) -> tuple[HookStatus, ...]:
    """The run's recorded deliveries, by hook index."""
    return tuple(_status(loads(i.value)) for i in ctx.client.scan(ctx.keys.hook(run_id)))


def _status(rec: HookRec) -> HookStatus:
    return HookStatus(
        index=rec["index"],
        on=tuple(rec["on"]),
        state=HookState(rec["state"]),
        attempts=rec["attempts"],
        last_error=rec["last_error"],
        due_at=rec["due_at"],
        kind=rec["kind"],
    )


def _claimable(rec: HookRec, now: float, kinds: Collection[str] | None) -> bool:
    if rec["state"] not in (HookState.DUE.value, HookState.DELIVERING.value):
        return False
    if kinds is not None and rec["kind"] not in kinds:
        return False
    lapsed = rec["expires_at"] is None or rec["expires_at"] <= now
    return rec["due_at"] <= now and lapsed


def claim(
    ctx: Ctx,
    deliverer: str,
    *,
    now: float,
    lease_for: float,
    run_id: str | None,
    kinds: Collection[str] | None,
) -> HookDelivery | None:
    """See Store.claim_hook."""
    client, keys = ctx.client, ctx.keys
    for _ in range(TRIES):
        markers = client.scan(keys.hook_due(run_id or ""), keys_only=True)
        wanted = [keys.hook(*_run_index(keys, m.key)) for m in markers]
        found, _ = client.read_many(wanted)
        ready = sorted(
            (item for item in found.values() if _claimable(loads(item.value), now, kinds)),
            key=lambda item: (loads(item.value)["due_at"], item.key),
        )
        if not ready:
            return None
        got = _take(ctx, ready[0], deliverer, now=now, lease_for=lease_for)
        if got is not None:
            return got
    raise errors.StoreError("claim a hook delivery: too much contention; try again")


def _run_index(keys: Keys, marker: str) -> tuple[str, int]:
    run_id, index = keys.split(marker, "hookdue")
    return run_id, int(index)


def _take(
    ctx: Ctx, item: c.Item, deliverer: str, *, now: float, lease_for: float
) -> HookDelivery | None:
    rec: HookRec = loads(item.value)
    run_id = ctx.keys.split(item.key, "hook")[0]
    run_item = ctx.client.get(ctx.keys.run(run_id))
    if run_item is None:  # collected meanwhile
        return None
    run: RunRec = loads(run_item.value)
    token = uuid.uuid4().hex
    rec.update(
        {
            "state": HookState.DELIVERING.value,
            "attempts": rec["attempts"] + 1,
            "token": token,
            "holder": deliverer,
            "expires_at": now + lease_for,
        }
    )
    put = c.put(item.key, dumps(rec))
    if not ctx.client.txn([c.mod_is(item.key, item.mod)], [put], "claim hook").succeeded:
        return None
    spec = HookSpec.from_dict((run.get("hooks") or [])[rec["index"]])
    return HookDelivery(
        run_id=run_id,
        index=rec["index"],
        end=rec["end"],
        spec=spec,
        token=token,
        attempt=rec["attempts"],
        expires_at=now + lease_for,
    )


def finish(
    ctx: Ctx, delivery: HookDelivery, *, now: float, error: str | None, retry_at: float | None
) -> HookState:
    """See Store.finish_hook."""
    client, keys = ctx.client, ctx.keys
    key = keys.hook(delivery.run_id, delivery.index)
    state = (
        HookState.DELIVERED
        if error is None
        else HookState.DUE
        if retry_at is not None
        else HookState.FAILED
    )
    for _ in range(TRIES):
        item = client.get(key)
        rec: HookRec | None = None if item is None else loads(item.value)
        if item is None or rec is None or rec["token"] != delivery.token:
            raise errors.LeaseLost(delivery.run_id, f"hooks[{delivery.index}]", delivery.attempt)
        cleared = {"token": None, "holder": None, "expires_at": None}
        rec.update({"state": state.value, "last_error": error, **cleared})  # type: ignore[typeddict-item]
        if retry_at is not None and error is not None:
            rec["due_at"] = retry_at
        ops = [c.put(key, dumps(rec))]
        if state is not HookState.DUE:
            ops.append(c.delete(keys.hook_due(delivery.run_id, delivery.index)))
        if client.txn([c.mod_is(key, item.mod)], ops, "finish hook").succeeded:
            return state
    raise errors.StoreError("record a hook delivery: too much contention; try again")
