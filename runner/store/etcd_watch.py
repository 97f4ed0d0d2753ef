"""One watch on the store prefix, so `wait()` blocks without polling.

The watch runs in a daemon thread and records the highest revision it has seen. It resumes from
the next revision after a dropped stream; when that revision has been compacted it restarts at
the compaction point and counts it as a change (callers re-read state anyway).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs; only etcd_* modules import it
from etcd3 import etcdrpc

from runner.store import etcd_client as c

logger = logging.getLogger(__name__)


class Watcher:
    """Tracks the latest revision under a prefix; `wait(after, timeout)` blocks until newer."""

    def __init__(self, client: c.Client, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._cond = threading.Condition()
        self._rev = 0
        self._next = 0
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
        return self._rev

    def start(self, after: int) -> int:
        """Watch from revision `after` + 1 unless already watching; the latest revision seen
        (`after` until an event arrives)."""
        with self._cond:
            if self._thread is None:
                self._next = after + 1
                self._rev = max(self._rev, after)
                self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
                self._thread.start()
            return self._rev

    def wait(self, after: int, timeout: float) -> bool:
        """True once a change with a revision above `after` was seen, False after `timeout`."""
        self.start(after)
        with self._cond:
            return self._cond.wait_for(lambda: self._rev > after, timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _seen(self, rev: int) -> None:
        with self._cond:
            if rev > self._rev:
                self._rev = rev
                self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except grpc.RpcError as exc:
                if not self._stop.is_set():
                    logger.debug("etcd watch interrupted: %s; resuming at %d", exc, self._next)
            self._stop.wait(0.2)  # reconnect backoff; close() ends it at once

    def _stream(self) -> None:
        create = etcdrpc.WatchCreateRequest(
            key=self._prefix.encode(),
            range_end=c.range_end(self._prefix),
            start_revision=self._next,
        )
        self._requests = queue.Queue()
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        self._call = self._client.watch_stub.Watch(
            self._request_iter(self._requests), metadata=self._client.metadata
        )
        for resp in self._call:
            if resp.compact_revision:
                self._next = int(resp.compact_revision)
                self.queue_rev = max(self.queue_rev, self._next)  # events were skipped
                self.cluster_rev = max(self.cluster_rev, self._next)
                self._seen(self._next)
                return  # recreate the watch from the compaction point
            for event in resp.events:
                self._next = max(self._next, int(event.kv.mod_revision) + 1)
                if event.kv.key.startswith(self._queue):
                    self.queue_rev = max(self.queue_rev, int(event.kv.mod_revision))
                elif event.kv.key.startswith(self._cluster):
                    self.cluster_rev = max(self.cluster_rev, int(event.kv.mod_revision))
                self._seen(int(event.kv.mod_revision))
            if resp.canceled:
                return

    def _request_iter(self, requests: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = requests.get()
            if item is None:
                return
            yield item
