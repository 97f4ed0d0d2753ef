"""Concurrency groups on the etcd store (`spec.concurrency`).

An unfinished run of a group has the key `cgroup/{group}/{run}`, written with the run (its last
create transaction, or the retry that makes it unfinished again) and deleted in the
transaction that ends it (`flow.maybe_end`, `runs.end_run`) or deletes it (`gc`). The group's
line is the order of those keys' create revisions: a run's tasks are claimable only while its
key is the group's oldest, so at most one run of a group runs at a time. Admission only ever
opens (older keys can only go away; a new key is always younger), so a claim needs no compare
for it, and each store object remembers the runs it admitted (`Ctx.admitted`). See docs/CI.md.
"""

from __future__ import annotations

from collections.abc import Callable

from runner import errors
from runner.models import RunState
from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import RunRec, load_run


def member_ops(keys: Keys, run: RunRec) -> list[c.Op]:
    """The put of the run's place in its group's line (none without a group)."""
    group = run.get("group")
    return [] if not group else [c.put(keys.group(group, run["id"]), run["id"].encode())]


def leave_ops(keys: Keys, run: RunRec) -> list[c.Op]:
    """The delete of the run's place in its group's line (none without a group)."""
    group = run.get("group")
    return [] if not group else [c.delete(keys.group(group, run["id"]))]


def line(client: c.Client, keys: Keys, group: str) -> list[str]:
    """The group's unfinished runs, first in line first."""
    items = client.scan(keys.group(group, ""), keys_only=True)
    return [keys.split(i.key, "cgroup")[1] for i in sorted(items, key=lambda i: i.create)]


def is_admitted(ctx: Ctx, run: RunRec) -> bool:
    """Whether this store object already admitted the run (no read: a blind claim)."""
    return not run.get("group") or (run["id"], int(run.get("ggen", 0))) in ctx.admitted


def admitted(ctx: Ctx, runs: dict[str, c.Item]) -> dict[str, c.Item]:
    """`runs` (run key -> record) without the runs their concurrency group holds back."""
    out: dict[str, c.Item] = {}
    lines: dict[str, list[str]] = {}
    for key, item in runs.items():
        run: RunRec = load_run(item.value)
        group = run.get("group")
        ticket = (run["id"], int(run.get("ggen", 0)))
        if group and ticket not in ctx.admitted:
            if group not in lines:
                lines[group] = line(ctx.client, ctx.keys, group)
            if lines[group][:1] != [run["id"]]:
                continue
            ctx.admitted.add(ticket)
        out[key] = item
    return out


def cancel_ahead(ctx: Ctx, run_id: str, group: str, *, cancel: Callable[..., object]) -> None:
    """cancelInProgress: `cancel(run, reason=...)` each run of the group ahead of the new one
    (which waits behind them meanwhile, so none of them overlaps it)."""
    why = f"cancelled by run {run_id} (concurrency group {group}, cancelInProgress)"
    for other in line(ctx.client, ctx.keys, group):
        if other != run_id:
            try:
                cancel(other, reason=why)
            except errors.RunNotFound:
                continue  # deleted meanwhile: it left the line


def waiting_reason(client: c.Client, keys: Keys, run: RunRec) -> str | None:
    """`queued: group G` while an unfinished run of its group is ahead of it, else None."""
    group = run.get("group")
    if not group or RunState(run["state"]).terminal:
        return None
    first = line(client, keys, group)[:1]
    return None if first in ([], [run["id"]]) else f"queued: group {group}"
