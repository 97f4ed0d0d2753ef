"""Watches on the store prefix, so `wait()` blocks without polling.

One gRPC stream, in a daemon thread, carries several watches:
- the puts of every key kind except the bulk bookkeeping no waiter needs (`QUIET_PUTS`: task
  records, ownership and `held` keys, done markers, arrivals, logs, the compaction proposal,
  the queue's floor),
  so the queue's new entries, runs, workers, the cluster and cron keys;
- the deletes (key only) of every kind except queue entries and `held` keys
  (`QUIET_DELETES`), so finishes and expired leases (their ownership keys, workers, locks);
- for a follower (`follow(run_id)`): the puts of that run's task records and log chunks.
Without the quiet kinds, each task's claim and finish would send every watching process the
task's whole record twice and a dozen other events.

Each watch resumes from the revision after the last event it saw when the stream drops; when
that revision has been compacted it restarts at the compaction point and counts it as a
change (callers re-read state anyway). Waking counts events received, not revisions, so an
event that arrives late on one watch still wakes a waiter whose other watches saw later ones.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs; only runner.store.etcd imports it
from etcd3 import etcdrpc

from runner import interrupts
from runner.store.etcd import client as c
from runner.store.etcd.keys import q

logger = logging.getLogger(__name__)

QUIET_PUTS = (
    "arr/",
    "cnt/",
    "compaction",
    "dcnt/",
    "done/",
    "held/",
    "log/",
    "logmeta/",
    "own/",
    "qfloor",
    "task/",
)
QUIET_DELETES = ("held/", "queue/")
MAX_FOLLOWED = 16  # runs followed at once by one store object (the oldest is dropped)
_NOPUT = etcdrpc.WatchCreateRequest.NOPUT
_NODELETE = etcdrpc.WatchCreateRequest.NODELETE


@dataclass(eq=False)  # compared by identity
class _Watch:
    """One key range watched for one kind of event, and the revision to resume it from."""

    key: bytes
    end: bytes
    filters: tuple[int, ...]
    next: int = 0

    def request(self) -> Any:
        create = etcdrpc.WatchCreateRequest(
            key=self.key, range_end=self.end, start_revision=self.next, filters=self.filters
        )
        return etcdrpc.WatchRequest(create_request=create)


def ranges_without(prefix: str, quiet: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    """The key ranges under `prefix` outside the `quiet` kinds, in order."""
    out, start = [], prefix.encode()
    for kind in sorted(quiet):
        left_out = f"{prefix}{kind}".encode()
        if start < left_out:
            out.append((start, left_out))
        start = max(start, c.range_end(f"{prefix}{kind}"))
    out.append((start, c.range_end(prefix)))
    return out


class Watcher:
    """Tracks the changes under a prefix that waiters need; `wait(after, timeout)` blocks
    until more than `after` events have been received."""

    def __init__(self, client: c.Client, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._cond = threading.Condition()
        self._rev = 0
        self._origin = 0  # the revision the watches started after (0: not started)
        self._events = 0
        self._watches = [_Watch(a, b, (_NODELETE,)) for a, b in ranges_without(prefix, QUIET_PUTS)]
        self._watches += [_Watch(a, b, (_NOPUT,)) for a, b in ranges_without(prefix, QUIET_DELETES)]
        self._followed: dict[str, list[_Watch]] = {}
        self._ids: dict[int, _Watch] = {}  # the current stream's watch ids
        self._creating: deque[_Watch] = deque()  # sent, not yet confirmed, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._requests: queue.Queue[Any] = queue.Queue()
        self._queue = f"{prefix}queue/".encode()
        self.queue_rev = 0  # the latest change to a queue entry seen (compaction: unknown)
        self._cluster = tuple(
            f"{prefix}{k}".encode() for k in ("assign/", "worker/", "cron/leader", "cluster/")
        )
        self.cluster_rev = 0  # the latest change to a key a worker's claims depend on

    @property
    def revision(self) -> int:
        """The latest revision of an event seen (or where the watch started)."""
        return self._rev

    @property
    def origin(self) -> int:
        """The revision after which every watched change is seen (0: not watching yet)."""
        return self._origin

    @property
    def events(self) -> int:
        """How many events (and compactions) were received so far."""
        return self._events

    def start(self, after: int) -> int:
        """Watch from revision `after` + 1 unless already watching; the latest revision seen
        (`after` until an event arrives)."""
        with interrupts.deferred(), self._cond:  # see runner.interrupts
            if self._thread is None:
                for w in self._watches:
                    w.next = after + 1
                self._rev = max(self._rev, after)
                self._origin = after
                self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
                self._thread.start()
            return self._rev

    def follow(self, run_id: str, after: int) -> None:
        """Also watch the puts of run `run_id`'s task records and logs, from `after` + 1."""
        with interrupts.deferred(), self._cond:
            if run_id in self._followed:
                self._followed[run_id] = self._followed.pop(run_id)  # most recent last
                return
            if len(self._followed) >= MAX_FOLLOWED:
                self._unfollow(next(iter(self._followed)))
            added = [
                _Watch(k.encode(), c.range_end(k), (_NODELETE,), after + 1)
                for k in (f"{self._prefix}task/{q(run_id)}/", f"{self._prefix}log/{q(run_id)}/")
            ]
            self._followed[run_id] = added
            self._watches += added
            if self._thread is not None:
                for w in added:
                    self._creating.append(w)
                    self._requests.put(w.request())

    def _unfollow(self, run_id: str) -> None:
        dropped = self._followed.pop(run_id)
        for w in dropped:
            self._watches.remove(w)  # its events are ignored from now on
        for watch_id, w in list(self._ids.items()):
            if w in dropped:
                cancel = etcdrpc.WatchCancelRequest(watch_id=watch_id)
                self._requests.put(etcdrpc.WatchRequest(cancel_request=cancel))

    def wait(self, after: int, timeout: float) -> bool:
        """True once more than `after` events were received, False after `timeout`. In the
        main thread a Ctrl-C is acted on between slices of the wait, never while `_cond`
        changes hands (the watch thread would wait for it forever: `runner.interrupts`)."""
        deadline = time.monotonic() + timeout
        with interrupts.deferred(), self._cond:
            while self._events <= after:
                interrupts.checkpoint()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(interrupts.bounded(remaining))
            return True

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _seen(self, rev: int, events: int) -> None:
        with self._cond:
            self._rev = max(self._rev, rev)
            self._events += events
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except grpc.RpcError as exc:
                if not self._stop.is_set():
                    logger.debug("etcd watch interrupted: %s; resuming", exc)
            self._stop.wait(0.2)  # reconnect backoff; close() ends it at once

    def _stream(self) -> None:
        with self._cond:
            self._requests = queue.Queue()
            self._ids.clear()
            self._creating = deque(self._watches)
            for w in self._watches:
                self._requests.put(w.request())
        self._call = self._client.watch_stub.Watch(
            self._request_iter(self._requests), metadata=self._client.metadata
        )
        for resp in self._call:
            if resp.compact_revision:
                compacted = int(resp.compact_revision)
                with self._cond:
                    for w in self._watches:
                        w.next = max(w.next, compacted)
                self.queue_rev = max(self.queue_rev, compacted)  # events were skipped
                self.cluster_rev = max(self.cluster_rev, compacted)
                self._seen(compacted, 1)
                return  # recreate the watches from the compaction point
            if resp.created:
                with self._cond:
                    if self._creating:  # confirmations come in the order the creates went
                        self._ids[int(resp.watch_id)] = self._creating.popleft()
            watch = self._ids.get(int(resp.watch_id))
            live = watch is not None and watch in self._watches
            if resp.events and live:
                self._received(watch, resp.events)  # type: ignore[arg-type]
            if resp.canceled:
                if live:
                    return  # the server ended a watch: recreate them all
                self._ids.pop(int(resp.watch_id), None)  # one this object cancelled

    def _received(self, watch: _Watch, events: Any) -> None:
        top = 0
        for event in events:
            rev = int(event.kv.mod_revision)
            top = max(top, rev)
            if event.kv.key.startswith(self._queue):
                self.queue_rev = max(self.queue_rev, rev)
            elif event.kv.key.startswith(self._cluster):
                self.cluster_rev = max(self.cluster_rev, rev)
        watch.next = max(watch.next, top + 1)
        self._seen(top, len(events))

    def _request_iter(self, requests: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = requests.get()
            if item is None:
                return
            yield item
