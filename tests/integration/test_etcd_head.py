"""Bounded head reads on a live etcd (docs/ARCHITECTURE.md, "Claims without a read"): after
the first, a claim's queue reads end a span past the last one's last key, and the claims still
take the queue's first entries, a higher priority first."""

from __future__ import annotations

from typing import Any

from runner.store import Store
from runner.store.etcd import EtcdStore
from runner.store.etcd import head as heads
from tests.contract import plans
from tests.contract.plans import T0, worker


def _s(store: EtcdStore) -> Store:
    return store


def queue_ranges(store: EtcdStore) -> list[Any]:
    """From now on, every range request under `queue/` in the transactions the store object
    sends (etcd's RangeRequest: `key`, `range_end`, `limit`)."""
    ranges: list[Any] = []
    queue = store.keys.queue().encode()
    real = store.client.call

    def call(fn: Any, request: Any, what: str, **kw: Any) -> Any:
        for op in [*getattr(request, "success", [])]:
            is_range = op.WhichOneof("request") == "request_range"
            if is_range and op.request_range.key.startswith(queue):
                ranges.append(op.request_range)
        return real(fn, request, what, **kw)

    store.client.call = call  # type: ignore[method-assign]
    return ranges


def test_etcd_claims_read_a_bounded_head_and_keep_the_order(etcd_store: EtcdStore) -> None:
    n = heads.SPAN * 3
    etcd_store.create_run(plans.fan_out(n), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    ranges = queue_ranges(etcd_store)
    taken: list[str] = []
    while leases := etcd_store.claim(w, now=T0, limit=50):
        taken += [lease.task_id for lease in leases]
    assert taken == [f"t{i}" for i in range(n)]  # FIFO within the priority, every entry once
    queue = etcd_store.keys.queue().encode()
    ends = [r.range_end for r in ranges if r.key == queue]  # the reads from the queue's start
    bounded = [e for e in ends if e.startswith(etcd_store.keys.queue().encode() + b"1")]
    assert len(bounded) >= len(ends) - 2  # all but the first read (and the last, at the end)


def test_etcd_bounded_head_still_finds_a_higher_priority_task_first(
    etcd_store: EtcdStore,
) -> None:
    etcd_store.create_run(plans.fan_out(heads.SPAN * 2), run_id="low", now=T0)
    w = worker(_s(etcd_store))
    assert len(etcd_store.claim(w, now=T0, limit=10)) == 10
    assert etcd_store.ctx.head_last  # the next reads are bounded
    urgent = plans.plan(plans.task("urgent", priority=10))
    etcd_store.create_run(urgent, run_id="high", now=T0 + 1)  # a later ready time, too
    (lease, *_) = etcd_store.claim(w, now=T0 + 1, limit=5)
    assert (lease.run_id, lease.task_id) == ("high", "urgent")
