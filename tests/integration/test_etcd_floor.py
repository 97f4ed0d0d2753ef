"""The queue's floor on a live etcd (runner.store.etcd.head): claims raise it, every write of
a queue entry below it lowers it in the same transaction, so no live entry ever sorts before
it, and head reads that start there still take the queue's first entries."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runner.store import Store
from runner.store.etcd import EtcdStore
from runner.store.etcd import client as c
from tests.contract import plans
from tests.contract.plans import T0, task, worker
from tests.integration.test_etcd_head import queue_ranges


@pytest.fixture
def pair(etcd_server: Any) -> Iterator[tuple[EtcdStore, EtcdStore]]:
    """Two store objects (as two processes) on one fresh prefix."""
    url = f"{etcd_server.url}/runner-floor-{uuid.uuid4().hex[:12]}/"
    a, b = EtcdStore.from_url(url), EtcdStore.from_url(url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _s(store: EtcdStore) -> Store:
    return store


def _floor(store: EtcdStore) -> str | None:
    item = store.client.get(store.keys.floor())
    return None if item is None else item.value.decode()


def _holds(store: EtcdStore) -> None:
    """No live queue entry sorts before the floor."""
    floor = _floor(store)
    live, _ = store.client.first(store.keys.queue(), 1)
    if floor is not None and live:
        assert floor <= live[0].key


def test_etcd_claims_raise_the_floor_and_head_reads_start_there(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, _ = pair
    a.create_run(plans.fan_out(300), run_id="r1", now=T0)
    w = worker(_s(a))
    ranges = queue_ranges(a)
    taken: list[str] = []
    while leases := a.claim(w, now=T0, limit=7):
        taken += [lease.task_id for lease in leases]
        _holds(a)
        floor = _floor(a)
        assert floor is not None
        assert floor.startswith(a.keys.queue())
    assert taken == [f"t{i}" for i in range(300)]  # FIFO, every entry once
    starts = [r.key for r in ranges if r.limit]  # the head reads
    from_floor = [s for s in starts if s != a.keys.queue().encode()]
    assert len(from_floor) >= len(starts) - 2  # all but the first reads start at the floor


def test_etcd_an_entry_queued_below_the_floor_lowers_it_and_is_claimed_first(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    a, b = pair
    a.create_run(plans.fan_out(100), run_id="low", now=T0)
    w = worker(_s(a))
    assert len(a.claim(w, now=T0, limit=10)) == 10
    raised = _floor(a)
    assert raised is not None
    assert a.ctx.floor == raised
    b.create_run(plans.plan(task("urgent", priority=10)), run_id="high", now=T0 + 1)
    lowered = _floor(a)
    assert lowered is not None
    assert lowered < raised  # in the transaction that queued it
    assert "/high/urgent" in lowered
    _holds(a)
    (lease, *_) = a.claim(w, now=T0 + 1, limit=5)  # `a` still knows the raised floor
    assert (lease.run_id, lease.task_id) == ("high", "urgent")


def test_etcd_an_entry_an_older_writer_put_below_the_floor_is_claimed_after_a_full_read(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    """A writer that does not lower the floor (a runner of an older version, during a rolling
    upgrade) hides its entry from floor reads only until a store object's next read from the
    queue's start (`head.REREAD_S`), which also lowers the floor."""
    a, b = pair
    a.create_run(plans.fan_out(50), run_id="low", now=T0)
    w = worker(_s(a))
    assert len(a.claim(w, now=T0, limit=10)) == 10
    b.client.floored = None  # `b` writes as an older runner would
    b.create_run(plans.plan(task("urgent", priority=10)), run_id="high", now=T0 + 1)
    assert "/high/urgent" not in (_floor(a) or "")
    a.ctx.full_read = 0.0  # `REREAD_S` has passed
    taken = [(x.run_id, x.task_id) for _ in range(2) for x in a.claim(w, now=T0 + 1, limit=1)]
    assert ("high", "urgent") in taken
    _holds(a)


def test_etcd_floor_holds_through_retries_priorities_and_hand_offs(
    pair: tuple[EtcdStore, EtcdStore],
) -> None:
    """Two store objects submit, claim, fail (retries with a backoff) and finish (chains
    hand successors over) in a random order; after every step no live entry lies below the
    floor, and in the end every task has run."""
    rnd = random.Random(17)
    stores = pair
    workers = [worker(_s(s), f"w{i}") for i, s in enumerate(stores)]
    now = T0
    runs: list[str] = []
    for i in range(8):
        s = stores[i % 2]
        prios = [rnd.choice([0, 0, 1, 5]) for _ in range(20)]
        s.create_run(plans.fan_out(20, priorities=prios), run_id=f"f{i}", now=now)
        runs.append(f"f{i}")
        if i % 3 == 0:
            retried = plans.plan(task("x", retries=2, delay=1.0), task("y", "x", priority=3))
            s.create_run(retried, run_id=f"r{i}", now=now)
            s.create_run(plans.linear(5), run_id=f"c{i}", now=now)
            runs += [f"r{i}", f"c{i}"]
        _holds(stores[0])
    failed: set[tuple[str, str]] = set()
    for step in range(400):
        now += 0.5
        k = rnd.randrange(2)
        leases = stores[k].claim(workers[k], now=now, limit=rnd.choice([1, 3, 8]))
        _holds(stores[0])
        for lease in leases:
            first_try = (lease.run_id, lease.task_id) not in failed
            if lease.task_id == "x" and first_try:
                failed.add((lease.run_id, lease.task_id))
                stores[k].finish(lease, plans.fail(), now=now)
            else:
                stores[k].finish(lease, plans.ok(), now=now)
            _holds(stores[0])
        idle = not leases and step % 5 == 0
        if idle and all(stores[0].get_run(r).state.terminal for r in runs):
            break
    states = {r: stores[0].get_run(r).state.value for r in runs}
    assert set(states.values()) == {"succeeded"}, states


def test_etcd_value_at_least_compare(etcd_store: EtcdStore) -> None:
    key = etcd_store.keys.floor()
    client = etcd_store.client
    assert not client.txn([c.value_at_least(key, "b")], [], "missing").succeeded
    client.txn([], [c.put(key, "queue/0002/x")], "put")
    for other, expected in [
        ("queue/0002/x", True),
        ("queue/0002/w", True),
        ("queue/0002/y", False),
        ("queue/0002/x0", False),
        ("queue/0002/", True),
        ("queue/0001/z", True),
    ]:
        assert client.txn([c.value_at_least(key, other)], [], "cmp").succeeded is expected, other
    assert client.txn([c.value_below(key, "queue/0002/y")], [], "cmp").succeeded
    assert not client.txn([c.value_below(key, "queue/0002/x")], [], "cmp").succeeded
