"""Wide tasks on etcd (more dependencies than etcd flow.WIDE): arrivals are counted, the
task's record is not rewritten by each dependency, and a huge fan-in fits etcd's limits."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest

from runner import bench
from runner.models import Lease
from runner.store import Store
from runner.store.etcd import EtcdStore
from runner.store.etcd import flow as etcd_flow
from runner.store.etcd.records import loads
from tests.contract import plans
from tests.contract.plans import T0, claim_one, ok, states, worker

N = etcd_flow.WIDE + 10


def _s(store: EtcdStore) -> Store:
    return cast(Store, store)


@pytest.fixture
def url(etcd_server: Any) -> str:
    return f"{etcd_server.url}/runner-wide-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def etcd_store(url: str) -> Iterator[EtcdStore]:
    s = EtcdStore.from_url(url)
    try:
        yield s
    finally:
        s.close()


def _fan_in(n: int) -> Any:
    """n independent tasks and a join depending on all of them."""
    deps = [plans.task(f"d{i}") for i in range(n)]
    return plans.plan(*deps, plans.task("join", *(t.id for t in deps)))


def _claim_all(store: EtcdStore, w: str, n: int) -> list[Lease]:
    leases: list[Lease] = []
    while len(leases) < n:
        got = store.claim(w, now=T0, limit=n - len(leases))
        assert got, "fewer tasks claimable than expected"
        leases += got
    return leases


def test_wide_join_counts_arrivals_without_rewriting_its_record(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(_fan_in(N), run_id="r1", now=T0)
    join_key = etcd_store.keys.task("r1", "join")
    before = etcd_store.client.get(join_key)
    assert before is not None
    assert "waiting" not in loads(before.value)
    leases = _claim_all(etcd_store, worker(_s(etcd_store)), N)
    for lease in leases[:-1]:
        etcd_store.finish(lease, ok(), now=T0)
    after = etcd_store.client.get(join_key)
    assert after is not None
    assert after.mod == before.mod
    (join,) = [t for t in etcd_store.get_run("r1").tasks if t.id == "join"]
    assert (join.state.value, join.waiting_reason) == ("pending", "waiting for 1 dependency")
    etcd_store.finish(leases[-1], ok(), now=T0)
    assert states(_s(etcd_store), "r1")["join"] == "ready"
    assert not etcd_store.client.scan(etcd_store.keys.join("r1"))  # its marker is cleared


def test_wide_join_is_queued_once_when_its_dependencies_finish_together(
    etcd_store: EtcdStore, url: str
) -> None:
    etcd_store.create_run(_fan_in(N), run_id="r1", now=T0)
    leases = _claim_all(etcd_store, worker(_s(etcd_store)), N)
    others = [EtcdStore.from_url(url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def finish(store: EtcdStore, part: list[Lease]) -> None:
        try:
            barrier.wait()
            for lease in part:
                store.finish(lease, ok(), now=T0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=finish, args=(s, leases[i::4])) for i, s in enumerate(others)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in others:
            s.close()
    assert errors == []
    queued = etcd_store.client.scan(etcd_store.keys.queue())
    assert [k.key.rsplit("/", 1)[-1] for k in queued] == ["join"]
    w = worker(_s(etcd_store), "w2")
    assert claim_one(_s(etcd_store), w).task_id == "join"
    assert etcd_store.claim(w, now=T0) == []


def test_wide_join_is_queued_once_when_one_call_finishes_all_its_dependencies(
    etcd_store: EtcdStore,
) -> None:
    """Each dependency's arrival puts the join's counter, so finish_many sends them in
    separate requests, all at once."""
    etcd_store.create_run(_fan_in(N), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    leases = _claim_all(etcd_store, w, N)
    lost, (join,) = etcd_store.finish_many([(x, ok()) for x in leases], now=T0, claim=5)
    assert (lost, join.task_id) == ([], "join")  # queued once, and claimed after
    assert states(_s(etcd_store), "r1")["join"] == "running"
    assert etcd_store.claim(w, now=T0, limit=5) == []
    etcd_store.finish(join, ok(), now=T0)
    run = etcd_store.get_run("r1")
    assert run.state.value == "succeeded"
    assert [len(t.attempts) for t in run.tasks] == [1] * (N + 1)


def test_a_dependency_that_fails_skips_the_wide_join(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(_fan_in(N), run_id="r1", now=T0)
    leases = _claim_all(etcd_store, worker(_s(etcd_store)), N)
    etcd_store.finish(leases[0], plans.fail(), now=T0)
    for lease in leases[1:]:
        etcd_store.finish(lease, ok(), now=T0)
    run = etcd_store.get_run("r1")
    assert {t.id: t.state.value for t in run.tasks}["join"] == "skipped"
    assert run.state.value == "failed"


def test_a_fan_in_of_100000_tasks_applies(etcd_store: EtcdStore) -> None:
    """Its join's record once held two 100,000-id lists (`depends` and `waiting`): more than
    etcd's 1.5 MiB request limit. Now it holds `depends` only."""
    etcd_store.create_run(bench.fan(100_000), run_id="big", now=T0)
    join = etcd_store.client.get(etcd_store.keys.task("big", "t100001"))
    assert join is not None
    assert len(join.value) < 1024 * 1024
    assert etcd_store.get_run("big", tasks=False).tasks_total == 100_002


def test_gc_deletes_a_wide_tasks_arrival_keys(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(_fan_in(N), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    for lease in _claim_all(etcd_store, w, N):
        etcd_store.finish(lease, ok(), now=T0)
    etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)  # the join
    assert etcd_store.get_run("r1").state.value == "succeeded"
    prefix = etcd_store.keys.prefix
    assert etcd_store.client.scan(f"{prefix}arr/", keys_only=True)  # N arrival markers
    assert etcd_store.gc(older_than=0.0, now=T0 + 60) == ["r1"]
    for kind in ("arr", "cnt", "join", "task"):
        assert etcd_store.client.scan(f"{prefix}{kind}/", keys_only=True) == []
