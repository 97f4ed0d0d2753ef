"""Bounded reads of the queue head (see `claim`).

etcd 3.4 visits every key of a range to answer a read with a limit, deleted keys too (its index
keeps them until a compaction), so a head read is bounded at both ends:

- its end: `SPAN` entries past the last one's last key (more while other workers claim past that
  between this object's reads: `adapt`);
- its start: the queue's floor (`Keys.floor`), a queue key no live entry sorts before. Every
  transaction that puts a queue entry also lowers the floor to it when the floor lies above
  (`client.Client.keep_floor`, in the same transaction), and a claim raises it to its first
  pick when its compares show no live entry in between (`lift`). A read starts at the floor's
  value as this object last saw it and reads the floor in the same transaction (one revision):
  the read saw every live entry when the floor was still at or above its start (`valid`), else
  it is read again from the queue's start. Without the floor every head read would walk every
  entry claimed since the last compaction (thousands, `compaction`).

A writer that puts an entry below the floor without lowering it (a process of an older runner
during a rolling upgrade) would hide it from floor reads: so a store object reads from the
queue's start at least every `REREAD_S` seconds, and lowers a floor found above the first
live entry (`repair`).
"""

from __future__ import annotations

import time
from typing import Any

from runner import errors
from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys

SPAN = 512  # queue entries past the last head read's last key a bounded head read covers
REREAD_S = 5.0  # a store object's head reads start at the queue's start at least this often
MAX_SPAN = 4096  # the span doubles (to this) after a bounded read came back short, and
# halves (to SPAN) after one that was not: a read visits at most this many entries more


def end(ctx: Ctx) -> str | None:
    """The end of a bounded head read: `SPAN` entries past the last head read's last key, in
    its priority and ready time; None (the queue's end) when unknown."""
    if not ctx.head_last:
        return None
    tier, ready, seq = ctx.keys.split(ctx.head_last, "queue")[:3]
    span = ctx.head_span or SPAN
    if not seq.isdigit() or int(seq) + span >= 10**8:
        return None
    return f"{ctx.keys.queue()}{tier}/{ready}/{int(seq) + span:08d}"


def adapt(ctx: Ctx, *, short: bool) -> None:
    """After a bounded read: when it came back short while entries lay past its end (other
    workers claimed past it meanwhile), bound the next ones further out; else closer in."""
    span = ctx.head_span or SPAN
    ctx.head_span = min(MAX_SPAN, 2 * span) if short else max(SPAN, span // 2)


def op(keys: Keys, end: str | None, limit: int, start: str | None = None) -> Any:
    """The first `limit` queue entries from `start` (the queue's start) to `end` (its end)."""
    queue = keys.queue()
    return c.span(start or queue, c.range_end(queue) if end is None else end, limit)


def start(ctx: Ctx) -> str:
    """Where a head read starts: the floor's value as last read, else (or every `REREAD_S`
    seconds) the queue's start."""
    now = time.monotonic()
    if ctx.floor and now - ctx.full_read < REREAD_S:
        return ctx.floor
    ctx.full_read = now
    return ctx.keys.queue()


def valid(ctx: Ctx, started: str, floor: c.Item | None) -> bool:
    """A head read from `started` saw every live entry: it started at the queue's start, or
    the floor (as read in the same transaction) was at or above `started`."""
    return started == ctx.keys.queue() or (floor is not None and floor.value.decode() >= started)


def repair(ctx: Ctx, started: str, floor: c.Item | None, entries: list[c.Item]) -> None:
    """After a read from the queue's start: lower a floor found above its first entry (put
    there by a writer that does not keep the floor)."""
    if started != ctx.keys.queue() or floor is None or not entries:
        return
    first = entries[0].key
    if first < floor.value.decode():
        lower = c.nested([c.value_above(ctx.keys.floor(), first)], [c.put(ctx.keys.floor(), first)])
        try:  # after a committed claim too: it must not fail the claim
            ctx.client.txn([], [lower], "queue floor")
        except errors.StoreError:
            return  # the next read from the queue's start repairs it


def seen(ctx: Ctx, floor: c.Item | None) -> None:
    """Remember the floor's value as read (none: reads start at the queue's start)."""
    ctx.floor = floor.value.decode() if floor is not None else ""


def before(ctx: Ctx, key: str) -> list[Any]:
    """Compares: no live queue entry sorts before `key` (from the floor, when known: the
    floor is still at or above the value last read and nothing lies between it and `key`)."""
    if not ctx.floor:
        return [c.none_in(ctx.keys.queue(), key)]
    return [c.value_at_least(ctx.keys.floor(), ctx.floor), c.none_in(ctx.floor, key)]


def lift(ctx: Ctx, to: str) -> Any | None:
    """A nested transaction for a claim: raise the floor to `to` (a queue key) when no live
    entry lies before it (compared before the claim's deletes: `to` itself may be live); the
    floor is created so when missing. None when `to` is not above the floor last read."""
    floor = ctx.keys.floor()
    if not ctx.floor:
        compares = [c.created_at(floor, 0), c.none_in(ctx.keys.queue(), to)]
    elif to > ctx.floor:
        compares = [*before(ctx, to), c.value_below(floor, to)]
    else:
        return None
    return c.nested(compares, [c.put(floor, to)])
