"""Attempt log tails on etcd: bounded chunks plus a small meta record per attempt.

An attempt's log is a list of chunks `log/{run}/{task}/{attempt}/{k}` of at most CHUNK bytes;
the meta record lists the kept chunks and their sizes. Appending rewrites the last chunk while
it has room, adds chunks, and drops the oldest chunks no longer needed for the last `limit`
bytes, so no value exceeds CHUNK and an attempt keeps about `limit` + CHUNK bytes. An append is
fenced by the ownership key like a finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner import errors
from runner.models import Lease
from runner.store.etcd import client as c
from runner.store.etcd import flow
from runner.store.etcd.context import Ctx, owns
from runner.store.etcd.records import LogMeta, TaskRec, claim_revision, loads

CHUNK = 256 * 1024


@dataclass
class LogPlan:
    """What one append writes: the new meta and the chunk puts and deletes."""

    meta: LogMeta
    puts: list[tuple[int, bytes]] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)


def needs_last(meta: LogMeta | None, size: int) -> int | None:
    """The chunk number whose content an append of `size` bytes rewrites, if any."""
    if not meta or not meta["chunks"]:
        return None
    k, length = meta["chunks"][-1]
    return int(k) if length + size <= CHUNK else None


def plan_append(meta: LogMeta | None, last: bytes | None, data: bytes, *, limit: int) -> LogPlan:
    """Append `data` to a log described by `meta` (None: empty), `last` being the content of
    the chunk `needs_last` named. Keeps at least the last `limit` bytes."""
    data = data[-limit:] if limit > 0 else b""
    chunks: list[list[int]] = [list(c) for c in meta["chunks"]] if meta else []
    nxt = int(meta["next"]) if meta else 0
    plan = LogPlan(meta={"chunks": [], "next": 0})
    if last is not None and chunks:
        room = CHUNK - len(last)
        head, data = data[:room], data[room:]
        plan.puts.append((chunks[-1][0], last + head))
        chunks[-1][1] = len(last) + len(head)
    for i in range(0, len(data), CHUNK):
        piece = data[i : i + CHUNK]
        plan.puts.append((nxt, piece))
        chunks.append([nxt, len(piece)])
        nxt += 1
    total = sum(n for _, n in chunks)
    while len(chunks) > 1 and total - chunks[0][1] >= limit:
        total -= chunks[0][1]
        plan.deletes.append(chunks.pop(0)[0])
    plan.meta = {"chunks": chunks, "next": nxt}
    return plan


def tail(chunks: list[bytes], limit: int) -> str:
    """The text of the last `limit` bytes of the concatenated chunks."""
    raw = b"".join(chunks)[-limit:] if limit > 0 else b""
    start = 0
    while start < len(raw) and start < 4 and raw[start] & 0xC0 == 0x80:
        start += 1  # a cut through a UTF-8 sequence: drop its continuation bytes
    return raw[start:].decode("utf-8", errors="replace")


# ---------------------------------------------------------------------- stored logs


def log_ops(ctx: Ctx, b: flow.Batch, lease: Lease, data: bytes, meta_item: c.Item | None) -> None:
    """Add an append of `data` to the attempt's log to the batch (guarded by the meta mod)."""
    keys = ctx.keys
    meta: LogMeta | None = None if meta_item is None else loads(meta_item.value)
    base = keys.log(lease.run_id, lease.task_id, lease.attempt)
    last_k = needs_last(meta, len(data))
    last = None
    if last_k is not None:
        item = ctx.client.get(f"{base}{last_k:08d}")
        last = b"" if item is None else item.value
    plan = plan_append(meta, last, data, limit=ctx.log_limit)
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


def get_log(ctx: Ctx, run_id: str, task_id: str, *, attempt: int | None) -> str:
    """See Store.get_log."""
    client, keys = ctx.client, ctx.keys
    if client.get(keys.run(run_id)) is None:
        raise errors.RunNotFound(run_id)
    task = client.get(keys.task(run_id, task_id))
    if task is None:
        raise errors.TaskNotFound(run_id, task_id)
    rec: TaskRec = loads(task.value)
    attempts = rec.get("attempts", [])
    number = attempt if attempt is not None else len(attempts)
    if number <= 0:
        return ""
    chunks = client.scan(keys.log(run_id, task_id, number))
    return tail([i.value for i in chunks], ctx.log_limit)
