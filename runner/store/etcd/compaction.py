"""Periodic compaction of etcd's history during long runs (on by default; `?compact=off`).

etcd 3.4 keeps every deleted key in its in-memory index until a compaction, and a range read
visits those tombstones too: each claimed queue entry is one at the queue's head, so without
compaction every head read walks every entry claimed since the last one (docs/PERFORMANCE.md,
"Fast by default"). Like Kubernetes' API server, which compacts its etcd every 5 minutes,
runner's claimers compact as they go.

Every `CHECK_CLAIMS` queue entries a store object claims it checks, on one of its sender
threads (a claim neither waits for a check nor fails by one). The `compaction` key holds the
revision proposed at the previous check of any process of the cluster and when: a check that
finds it at least `MIN_AGE` seconds old replaces it with the current revision, by a
compare-and-set on the key, and the process that wins compacts to the old proposal. So one
interval of history (the claims between two checks, at least `MIN_AGE`) is always kept, never
the current revision; etcd walks its index (O(keys)) once per interval however many workers
check; a target already compacted (`runner gc`, another owner) is not an error.

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

CHECK_CLAIMS = 2000  # queue entries a store object claims between two of its checks
MIN_AGE = 1.0  # seconds: a proposed revision is compacted to no sooner than this


class Proposal(TypedDict):
    """The `compaction` key: the revision to compact to at the next check, and when it was
    proposed (wall clock of the proposer)."""

    rev: int
    at: float


@dataclass
class Compaction:
    """One store object's count of claimed entries toward its next check."""

    enabled: bool = True
    claims: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claimed(self, n: int) -> bool:
        """Count `n` claimed queue entries; True when a check is due."""
        if not self.enabled:
            return False
        with self.lock:
            self.claims += n
            if self.claims < CHECK_CLAIMS:
                return False
            self.claims = 0
            return True


def check(client: c.Client, key: str) -> int:
    """Propose the current revision and compact to the previous proposal when it is old
    enough and this check won the key; the revision compacted to (0: none). A failure only
    postpones the compaction (logged)."""
    try:
        item = client.get(key)
        now, rev = time.time(), client.revision
        proposed: Proposal | None = None if item is None else loads(item.value)
        if proposed is not None and now - float(proposed["at"]) < MIN_AGE:
            return 0  # proposed too recently: the next check
        compare = c.created_at(key, 0) if item is None else c.mod_is(key, item.mod)
        mine: Proposal = {"rev": rev, "at": now}
        if not client.txn([compare], [c.put(key, dumps(mine))], "compaction").succeeded:
            return 0  # another process checked meanwhile
        if proposed is None:
            return 0
        gc.compact_to(client, int(proposed["rev"]))
        return int(proposed["rev"])
    except errors.StoreError as exc:
        logger.debug("etcd compaction check failed: %s", exc)
        return 0
