"""Shared state of the etcd store's operations, and the fencing check.

The fencing token is the ownership key's create revision (= the claim's revision, see
`claim`), shifted left 8 bits plus the task's slot in the transaction, so a batch claim
still gives every attempt its own token. A finish or log append compares the ownership key's
create revision and slot with the token, so a stale worker records nothing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from runner import dispatch, errors
from runner.failpoints import Failpoints
from runner.models import Lease
from runner.store.etcd import client as c
from runner.store.etcd.compaction import Compaction
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import OwnRec, TaskRec, claim_revision, loads, token_of
from runner.store.etcd.watch import Watcher
from runner.store.liveness import Clocks

Seen = dict[str, c.Item | None]  # key -> its item as last known (None: absent)
MAX_OPS = 120  # operations per transaction, under etcd's 128
SENDERS = 8  # requests one store object sends at once
MAX_CLAIMED = 10_000  # remembered claims; more (leases never finished here) are forgotten


@dataclass
class WorkerView:
    """What one worker's claims need from the cluster keys, as of revision `rev`."""

    rev: int = 0
    draining: bool = False
    assigned: list[c.Item] = field(default_factory=list)


@dataclass
class Cluster:
    """Per store object: the dispatch mode and each local worker's view."""

    mode: tuple[bool, str] = (False, dispatch.PULL)  # (a scheduler leads, its default)
    views: dict[str, WorkerView] = field(default_factory=dict)
    dirty: int = 0  # revision of this object's latest write to a cluster key
    run_dispatch: dict[str, str | None] = field(default_factory=dict)  # run -> spec.dispatch


@dataclass
class Ctx:
    """What the operations of one store object share: the client, the key layout, the
    watches, and what this object remembers between operations."""

    client: c.Client
    keys: Keys
    watcher: Watcher
    failpoints: Failpoints = field(default_factory=Failpoints)
    log_limit: int = 1024 * 1024
    # token -> the records its claim wrote and the successors it read: a finish compares
    # them without reading first (a stale entry only costs the finish one failed compare)
    claimed: dict[int, Seen] = field(default_factory=dict)
    guess: list[tuple[str, str]] = field(default_factory=list)  # next queue entries, probably
    # (queue entry, task record, run record) expected at the queue head: a claim without a read
    ahead: list[tuple[c.Item, c.Item, c.Item]] = field(default_factory=list)
    ahead_cut: bool = False  # more entries may follow `ahead` (its read was cut or bounded)
    head_last: str = ""  # the last queue key of the latest head read: bounds the next one
    head_span: int = 0  # queue entries a bounded head read covers past `head_last` (0: SPAN)
    head_first: str = ""  # the first queue key of the latest head read: where to lift the floor
    floor: str = ""  # the queue's floor as last read ("": unknown or missing; see `head`)
    full_read: float = 0.0  # when a head read last started at the queue's start (monotonic)
    misses: int = 0  # claims left before guessing again, after a guess failed
    empty_at: int = 0  # a revision at which this object read an empty queue (0: unknown)
    # tokens whose finish transaction failed without an answer (it may have committed)
    uncertain: set[int] = field(default_factory=set)
    cluster: Cluster = field(default_factory=Cluster)  # assignments, drains
    lock_rev: int = 0  # revision at which the last claim counted lock holders
    # the workers' clocks as this object sees them (runner.store.liveness): deadlines and
    # backoffs are written from the latest live clock and judged by the earliest
    clocks: Clocks = field(default_factory=Clocks)
    leases: dict[str, int] = field(default_factory=dict)  # worker -> its lease, registered here
    # (run, retries) their concurrency group let run (`groups.admitted`)
    admitted: set[tuple[str, int]] = field(default_factory=set)
    compaction: Compaction = field(default_factory=Compaction)  # see `compaction`
    lock: threading.Lock = field(default_factory=threading.Lock)

    _senders: ThreadPoolExecutor | None = None

    def senders(self) -> ThreadPoolExecutor:
        """Threads that send requests together (see `finish.finish_many`)."""
        if self._senders is None:
            self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="etcd-send")
        return self._senders

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)

    def remember(self, token: int, seen: Seen) -> None:
        if len(self.claimed) >= MAX_CLAIMED:
            self.claimed.clear()
        self.claimed[token] = seen


@dataclass
class Pick:
    entry: c.Item
    task: c.Item
    run_id: str
    rec: TaskRec
    lock_rev: int = 0  # lock holders were counted at this revision (0: no locks)
    written: bytes = b""  # the task record as the claim wrote it


def owns(own: c.Item | None, lease: Lease) -> bool:
    """The ownership key still carries the lease's token (create revision and slot)."""
    if own is None or own.create != claim_revision(lease.token):
        return False
    value: OwnRec = loads(own.value)
    return token_of(own.create, int(value.get("slot", 0))) == lease.token


def worker_lost(worker_id: str) -> errors.LeaseLost:
    return errors.WorkerLeaseLost(worker_id)
