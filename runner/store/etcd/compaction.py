"""Periodic compaction of etcd's history during long runs (on by default; `?compact=off`).

etcd 3.4 keeps every deleted key in its in-memory index until a compaction, and a range read
visits those tombstones too: each claimed queue entry is one at the queue's head, so without
compaction every head read walks every entry claimed since the last one (docs/PERFORMANCE.md,
"Fast by default"). Like Kubernetes' API server, which compacts its etcd every 5 minutes, each
store object compacts as it claims: every `CHECK_CLAIMS` queue entries it claimed it checks,
and compacts to the revision it saw at a previous check at least `MIN_AGE` seconds ago,
rounded down to a multiple of `ALIGN`. So at least that much history (one interval, never the
current revision) is kept, and the workers of a cluster, which see about the same revisions,
mostly ask for the same targets: etcd walks its index once per target, and a target already
compacted is not an error (`gc.compact`).

The compaction request runs on one of the store object's sender threads, so a claim never
waits for it or fails by it. Readers at an old revision recover: watches restart at the
compaction point and count it as a change (`watch`), paged reads at one revision read again
at a newer one (`client.Client.scan_at`), the sweep reads its pair of scans again
(`workers.lose_expired`). Compares (the claims' and finishes') look at the current keys only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from runner import errors
from runner.store.etcd import client as c
from runner.store.etcd import gc

logger = logging.getLogger(__name__)

CHECK_CLAIMS = 500  # queue entries this store object claims between two checks
MIN_AGE = 1.0  # seconds: a target was seen at least this long ago
ALIGN = 2000  # targets are multiples of this many revisions (the workers' targets agree)


@dataclass
class Compaction:
    """One store object's compaction bookkeeping."""

    enabled: bool = True
    claims: int = 0  # queue entries claimed since the last check
    mark: int = 0  # the revision seen at the check a target is taken from (0: none yet)
    mark_at: float = 0.0  # when (monotonic)
    done: int = 0  # the highest revision compacted (by this object or found compacted)
    lock: threading.Lock = field(default_factory=threading.Lock)


def claimed(state: Compaction, client: c.Client, n: int) -> int:
    """Count `n` claimed queue entries; at a check, the revision to compact to (0: none)."""
    if not state.enabled:
        return 0
    with state.lock:
        state.claims += n
        if state.claims < CHECK_CLAIMS:
            return 0
        state.claims = 0
        return _check(state, client.revision, time.monotonic())


def _check(state: Compaction, rev: int, now: float) -> int:
    """The target of this check, if any, and the mark for the next one."""
    if not state.mark:
        state.mark, state.mark_at = rev, now
        return 0
    if now - state.mark_at < MIN_AGE:
        return 0  # the mark is too recent: keep it until it is old enough
    target = state.mark // ALIGN * ALIGN
    state.mark, state.mark_at = rev, now
    if target <= state.done:
        return 0
    state.done = target
    return target


def compact(client: c.Client, target: int) -> None:
    """Compact etcd's history up to `target`. A failure only postpones it (logged)."""
    try:
        gc.compact_to(client, target)
    except errors.StoreError as exc:
        logger.debug("etcd compaction to revision %d failed: %s", target, exc)
