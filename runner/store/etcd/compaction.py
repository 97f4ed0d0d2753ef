"""Periodic compaction of etcd's history during long runs (on by default; `?compact=off`).

etcd 3.4 keeps every deleted key in its in-memory index until a compaction, and a range read
visits those tombstones too (each claimed queue entry, ownership and `held/` key is one);
its database keeps every old value (docs/PERFORMANCE.md, "Fast by default"). Like Kubernetes'
API server, which compacts its etcd every 5 minutes, runner's claimers compact as they go.
A compaction walks etcd's whole index, so its cost grows with the store: since head reads
start at the queue floor (`head.py`), past the tombstones, a longer interval costs less
(8,000 claims: etcd's CPU per task at 100,000 queued 1.03-1.10x that at 2,000; 2,000 claims:
1.55-1.83x).

Every `CHECK_CLAIMS` queue entries a store object claims it checks, on one of its sender
threads (a claim neither waits for a check nor fails by one). The `compaction` key holds a
revision proposed earlier by some process of the cluster, when, and how many entries the
cluster's checks counted since. A check adds its claims there by a compare-and-set on the
key; the check that finds `INTERVAL` entries counted and the proposal at least `MIN_AGE`
seconds old proposes the current revision instead, and, having won the key, compacts to the
old proposal. So about one interval of history (`INTERVAL` claims, at least `MIN_AGE`) is
always kept, never the current revision, and etcd walks its index (O(keys)) once per
interval however many workers check; a target already compacted (`runner gc`, another owner)
is not an error. `at` is the proposer's wall clock: a clock ahead of the others' only delays
a compaction (the proposer itself still finds it old), one behind shortens the kept time,
never the kept interval of claims.

Readers at an old revision recover: watches restart at the compaction point and count it as a
change (`watch`), paged reads at one revision read again at a newer one
(`client.Client.scan_at`), the sweep reads its pair of scans again (`workers.lose_expired`).
Compares (claims', finishes', fencing) look at the current keys only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TypedDict

from runner import errors
from runner.store.etcd import client as c
from runner.store.etcd import gc
from runner.store.etcd.records import dumps, loads

logger = logging.getLogger(__name__)

CHECK_CLAIMS = 250  # queue entries a store object claims between two of its checks
INTERVAL = 8000  # queue entries claimed in the cluster between two compactions
MIN_AGE = 1.0  # seconds: a proposed revision is compacted to no sooner than this


class Proposal(TypedDict):
    """The `compaction` key: the revision to compact to next, when it was proposed (the
    proposer's wall clock), and the queue entries claimed since (as the checks counted)."""

    rev: int
    at: float
    claims: int


@dataclass
class Compaction:
    """One store object's count of claimed entries toward its next check."""

    enabled: bool = True
    claims: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claimed(self, n: int) -> int:
        """Count `n` claimed queue entries; the count to check with when a check is due (0:
        not yet)."""
        if not self.enabled:
            return 0
        with self.lock:
            self.claims += n
            if self.claims < CHECK_CLAIMS:
                return 0
            counted, self.claims = self.claims, 0
            return counted


def check(client: c.Client, key: str, claims: int) -> int:
    """Add `claims` to the proposal's count; when the interval is complete and the proposal
    old enough, propose the current revision and compact to the old one. The revision
    compacted to (0: none). A failure only postpones the compaction (logged)."""
    try:
        item = client.get(key)
        now, rev = time.time(), client.revision
        old: Proposal | None = None if item is None else loads(item.value)
        new: Proposal = {"rev": rev, "at": now, "claims": 0}
        due = old is not None and old["claims"] + claims >= INTERVAL
        if old is not None and (not due or now - float(old["at"]) < MIN_AGE):
            new = {"rev": old["rev"], "at": old["at"], "claims": old["claims"] + claims}
            due = False
        compare = c.created_at(key, 0) if item is None else c.mod_is(key, item.mod)
        if not client.txn([compare], [c.put(key, dumps(new))], "compaction").succeeded:
            return 0  # another process checked meanwhile: its count is there, ours is lost
        if old is None or not due:
            return 0
        gc.compact_to(client, int(old["rev"]))
        return int(old["rev"])
    except errors.StoreError as exc:
        logger.debug("etcd compaction check failed: %s", exc)
        return 0
