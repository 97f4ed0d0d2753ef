"""Bounded reads of the queue head (see `claim`): etcd 3.4 visits every key of a range to
answer a read with a limit, so a head read ends `SPAN` entries past the last one's last key
(more while other workers claim past that between this object's reads: `adapt`)."""

from __future__ import annotations

from typing import Any

from runner.store.etcd import client as c
from runner.store.etcd.context import Ctx
from runner.store.etcd.keys import Keys

SPAN = 512  # queue entries past the last head read's last key a bounded head read covers
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
