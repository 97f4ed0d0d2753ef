"""The etcd store's `dcnt/{run}/` tally keys (the count of a run's `done/` markers that a
finish reads instead of counting `done/`, O(run) in etcd 3.4) stay in step with the markers
through every way a task becomes terminal or is made to run again, against a real etcd."""

from __future__ import annotations

from typing import cast

from runner.models import Lease, TaskState, When
from runner.store import Store
from runner.store.etcd import EtcdStore, flow
from runner.store.etcd import client as c
from tests.contract import plans
from tests.contract.plans import T0, claim_one, fail, ok, worker


def _s(store: EtcdStore) -> Store:
    return cast(Store, store)


def _tally(store: EtcdStore, run_id: str) -> int:
    responses, _ = store.client.reads([c.keys_in(store.keys.tally(run_id))], "test: tally")
    return flow.tallied(responses[0].response_range.kvs)


def _in_step(store: EtcdStore, run_id: str) -> int:
    """The run's `done/` markers, checked equal to what its tally keys count."""
    done = store.client.count(store.keys.done(run_id, ""))
    assert _tally(store, run_id) == done
    return done


def test_tally_counts_finishes_batched_past_the_shard_count(etcd_store: EtcdStore) -> None:
    n = flow.TALLY_SHARDS + 72  # t0 and t128 (and so on) would share a shard
    etcd_store.create_run(plans.fan_out(n), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    leases: list[Lease] = []
    while len(leases) < n:
        got = etcd_store.claim(w, now=T0, limit=64)
        assert got
        leases += got
    half = leases[: n // 2 + 40]
    assert etcd_store.finish_many([(x, ok()) for x in half], now=T0) == ([], [])
    assert _in_step(etcd_store, "r1") == len(half)
    assert etcd_store.get_run("r1").state.value == "running"
    rest = leases[len(half) :]
    assert etcd_store.finish_many([(x, ok()) for x in rest], now=T0) == ([], [])
    assert _in_step(etcd_store, "r1") == n
    assert etcd_store.get_run("r1").state.value == "succeeded"


def test_tally_follows_failures_skips_cancels_and_retries(etcd_store: EtcdStore) -> None:
    # a fails: b is skipped (a skip cascade in a's finish), c too; d, independent, runs
    spec = plans.plan(
        plans.task("a"),
        plans.task("b", "a"),
        plans.task("c", "b"),
        plans.task("d"),
        plans.task("e", "a", when=When.ALWAYS),
    )
    etcd_store.create_run(spec, run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    first = {x.task_id: x for x in etcd_store.claim(w, now=T0, limit=2)}
    etcd_store.finish(first["a"], fail(), now=T0)
    assert _in_step(etcd_store, "r1") == 3  # a failed, b and c skipped
    etcd_store.finish(first["d"], ok(), now=T0)
    etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)  # e
    assert _in_step(etcd_store, "r1") == 5
    assert etcd_store.get_run("r1").state.value == "failed"

    retried = etcd_store.retry_run("r1", now=T0 + 1)  # a, b, c run again; d, e are kept
    assert set(retried) >= {"a", "b", "c"}
    done = _in_step(etcd_store, "r1")
    assert done == 5 - len(retried)
    while leases := etcd_store.claim(w, now=T0 + 1):
        for lease in leases:
            etcd_store.finish(lease, ok(), now=T0 + 1)
            _in_step(etcd_store, "r1")
    assert _in_step(etcd_store, "r1") == 5
    assert etcd_store.get_run("r1").state.value == "succeeded"

    # a cancel makes the unstarted tasks terminal in chunks; the running one's finish after
    etcd_store.create_run(plans.fan_out(70), run_id="r2", now=T0)
    running = claim_one(_s(etcd_store), w)
    etcd_store.cancel_run("r2", now=T0)
    assert _in_step(etcd_store, "r2") == 69
    etcd_store.finish(running, ok(), now=T0)
    assert _in_step(etcd_store, "r2") == 70
    assert {t.state for t in etcd_store.get_run("r2").tasks} <= {
        TaskState.CANCELLED,
        TaskState.SUCCEEDED,
    }
