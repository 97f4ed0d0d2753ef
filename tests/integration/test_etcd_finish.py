"""EtcdStore.finish against a real etcd: lost replies, cached claims, successors in one txn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import pytest

from runner import errors
from runner.models import Lease
from runner.store import Store
from runner.store.etcd import EtcdStore
from tests.contract import plans
from tests.contract.plans import T0, claim_one, ok, states, worker


def _s(store: EtcdStore) -> Store:
    """The store as the protocol (the helpers of tests/contract take a Store)."""
    return cast(Store, store)


@contextlib.contextmanager
def _replies_lost(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within: every transaction commits, then its reply is lost (StoreUnavailable)."""
    real = store.client.txn

    def txn(compare: Any, success: Any, label: str, failure: Any = ()) -> Any:
        real(compare, success, label, failure)
        raise errors.StoreUnavailable("reply lost")

    with monkeypatch.context() as m:
        m.setattr(store.client, "txn", txn)
        yield


def _finish_losing_the_reply(
    store: EtcdStore, monkeypatch: pytest.MonkeyPatch, lease: Lease, claim: int = 0
) -> None:
    """Finish `lease`: the transaction commits, then its reply is lost."""
    with _replies_lost(store, monkeypatch), pytest.raises(errors.StoreUnavailable):
        store.finish(lease, ok(), now=T0, claim=claim)


def test_etcd_finish_retry_after_lost_reply_succeeds_once(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd_store.create_run(plans.linear(2), run_id="r1", now=T0)
    lease = claim_one(_s(etcd_store), worker(_s(etcd_store)))
    _finish_losing_the_reply(etcd_store, monkeypatch, lease)
    etcd_store.finish(lease, ok(), now=T0)  # recorded by the first call: not LeaseLost
    assert states(_s(etcd_store), "r1") == {"t0": "succeeded", "t1": "ready"}
    assert len(etcd_store.get_run("r1").tasks[0].attempts) == 1
    with pytest.raises(errors.LeaseLost):
        etcd_store.finish(lease, ok(), now=T0)  # a later, deliberate second finish


def test_etcd_finish_by_another_store_object_reads_what_it_compares(
    etcd_store: EtcdStore, etcd_server: Any
) -> None:
    etcd_store.create_run(plans.linear(3), run_id="r1", now=T0)
    lease = claim_one(_s(etcd_store), worker(_s(etcd_store)))
    other = EtcdStore.from_url(f"{etcd_server.url}{etcd_store.keys.prefix}")
    try:
        other.finish(lease, ok(), now=T0)  # nothing cached there: reads first
    finally:
        other.close()
    assert states(_s(etcd_store), "r1") == {"t0": "succeeded", "t1": "ready", "t2": "pending"}


def test_etcd_finish_with_stale_cached_successor_retries(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(plans.linear(2), run_id="r1", now=T0)
    lease = claim_one(_s(etcd_store), worker(_s(etcd_store)))
    seen = etcd_store.ctx.claimed[lease.token]
    succ = etcd_store.keys.task("r1", "t1")
    item = seen[succ]
    assert item is not None
    seen[succ] = type(item)(item.key, item.value, item.create, item.mod - 1, item.lease)
    etcd_store.finish(lease, ok(), now=T0)  # the compare fails; the failure branch refreshes
    assert states(_s(etcd_store), "r1") == {"t0": "succeeded", "t1": "ready"}


def test_etcd_get_run_follows_changes_incrementally(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(plans.linear(3), run_id="r1", now=T0)
    assert states(_s(etcd_store), "r1") == {"t0": "ready", "t1": "pending", "t2": "pending"}
    w = worker(_s(etcd_store))
    for _ in range(3):
        etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)
    run = etcd_store.get_run("r1")
    assert run.state.value == "succeeded"
    assert [t.id for t in run.tasks] == ["t0", "t1", "t2"]
    assert run.tasks_done == 3


def test_etcd_claim_without_read_yields_to_a_new_higher_priority_entry(
    etcd_store: EtcdStore, etcd_server: Any
) -> None:
    etcd_store.create_run(plans.fan_out(4), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    assert [lease.task_id for lease in etcd_store.claim(w, now=T0)] == ["t0"]
    assert etcd_store.ctx.ahead  # the next claim would commit without reading the head
    other = EtcdStore.from_url(f"{etcd_server.url}{etcd_store.keys.prefix}")
    try:
        other.create_run(plans.plan(plans.task("urgent", priority=9)), run_id="r2", now=T0)
    finally:
        other.close()
    assert [lease.task_id for lease in etcd_store.claim(w, now=T0, limit=2)] == ["urgent", "t1"]
    assert [lease.task_id for lease in etcd_store.claim(w, now=T0, limit=5)] == ["t2", "t3"]


def _count_requests(store: EtcdStore) -> list[str]:
    """From now on, the label of every request the store object sends, in order."""
    calls: list[str] = []
    real = store.client.call

    def call(fn: Any, request: Any, what: str, **kw: Any) -> Any:
        calls.append(what)
        return real(fn, request, what, **kw)

    store.client.call = call  # type: ignore[method-assign]
    return calls


def _count_tallies(store: EtcdStore) -> list[int]:
    """From now on, for each finish request, how many reads of a run's `done/` tally it ran
    (nested ones included, in the branch each nested transaction took)."""
    tallies: list[int] = []
    real = store.client.txn

    def txn(compare: Any, success: Any, what: str, failure: Any = ()) -> Any:
        res = real(compare, success, what, failure)
        if what == "finish":
            tallies.append(_ran_counts(success if res.succeeded else failure, res.responses))
        return res

    store.client.txn = txn  # type: ignore[method-assign]
    return tallies


def _ran_counts(ops: Any, responses: Any) -> int:
    ran = 0
    for op, resp in zip(ops, responses, strict=True):
        if op.WhichOneof("request") == "request_range":
            ran += int(b"/dcnt/" in op.request_range.key)
        elif op.WhichOneof("request") == "request_txn":
            inner, answer = op.request_txn, resp.response_txn
            branch = inner.success if answer.succeeded else inner.failure
            ran += _ran_counts(branch, answer.responses)
    return ran


def test_etcd_chain_claims_the_successor_a_finish_queued_without_reading(
    etcd_store: EtcdStore,
) -> None:
    etcd_store.create_run(plans.linear(3), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)
    assert [e[0].key.rsplit("/", 1)[-1] for e in etcd_store.ctx.ahead] == ["t1"]
    calls = _count_requests(etcd_store)
    assert claim_one(_s(etcd_store), w).task_id == "t1"
    assert calls == ["claim"]


def test_etcd_finish_hands_the_successor_over_in_its_own_transaction(
    etcd_store: EtcdStore,
) -> None:
    etcd_store.create_run(plans.linear(3), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    (t1,) = etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0, claim=1)
    calls = _count_requests(etcd_store)
    (t2,) = etcd_store.finish(t1, ok(), now=T0, claim=1)
    assert (t1.task_id, t2.task_id) == ("t1", "t2")
    assert calls == ["finish"]  # no claim transaction, no queue entry for other workers
    assert not etcd_store.client.scan(etcd_store.keys.queue())
    assert states(_s(etcd_store), "r1") == {"t0": "succeeded", "t1": "succeeded", "t2": "running"}
    etcd_store.finish(t2, ok(), now=T0)
    assert etcd_store.get_run("r1").state.value == "succeeded"


def test_etcd_finish_retry_after_lost_reply_returns_the_handed_over_successor(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd_store.create_run(plans.linear(3), run_id="r1", now=T0)
    lease = claim_one(_s(etcd_store), worker(_s(etcd_store)))
    _finish_losing_the_reply(etcd_store, monkeypatch, lease, claim=1)
    assert states(_s(etcd_store), "r1") == {"t0": "succeeded", "t1": "running", "t2": "pending"}
    (t1,) = etcd_store.finish(lease, ok(), now=T0, claim=1)  # the retry finds its hand-off
    assert (t1.task_id, t1.attempt) == ("t1", 1)
    assert etcd_store.finish(t1, ok(), now=T0) == []  # its token is the one the store holds
    assert states(_s(etcd_store), "r1")["t1"] == "succeeded"


def test_etcd_finish_many_sends_independent_finishes_in_one_request(
    etcd_store: EtcdStore,
) -> None:
    etcd_store.create_run(plans.fan_out(7), run_id="r1", now=T0)  # a root and 6 successors
    w = worker(_s(etcd_store))
    etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)
    leases = etcd_store.claim(w, now=T0, limit=6)
    assert len(leases) == 6
    calls = _count_requests(etcd_store)
    counts = _count_tallies(etcd_store)
    assert etcd_store.finish_many([(x, ok()) for x in leases], now=T0) == ([], [])
    assert calls.count("finish") == 1
    assert counts == [1]  # the run's done/ range counted once, after all six: the run ended
    assert etcd_store.get_run("r1").state.value == "succeeded"


def test_etcd_finish_counts_no_run_it_still_holds_a_task_of(etcd_store: EtcdStore) -> None:
    etcd_store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    first, second, last = etcd_store.claim(w, now=T0, limit=3)
    counts = _count_tallies(etcd_store)
    assert etcd_store.finish_many([(first, ok()), (second, ok())], now=T0) == ([], [])
    assert counts == [0]  # `last`, still owned, witnesses that the run goes on: no count
    assert etcd_store.get_run("r1").state.value == "running"
    etcd_store.finish(last, ok(), now=T0)
    assert counts == [0, 1]
    assert etcd_store.get_run("r1").state.value == "succeeded"


def test_etcd_finish_counts_when_its_witness_finished_elsewhere(
    etcd_store: EtcdStore, etcd_server: Any
) -> None:
    etcd_store.create_run(plans.fan_out(2), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    witness, lease = etcd_store.claim(w, now=T0, limit=2)
    other = EtcdStore.from_url(f"{etcd_server.url}{etcd_store.keys.prefix}")
    try:
        other.finish(witness, ok(), now=T0)  # this object still counts `witness` as held
    finally:
        other.close()
    etcd_store.finish(lease, ok(), now=T0)  # its witness compare fails: it counts, and ends
    assert etcd_store.get_run("r1").state.value == "succeeded"


def test_etcd_finish_many_sends_finishes_that_write_one_join_apart(etcd_store: EtcdStore) -> None:
    # a, b -> j and c independent: a and b both rewrite j's record
    etcd_store.create_run(
        plans.plan(plans.task("a"), plans.task("b"), plans.task("c"), plans.task("j", "a", "b")),
        run_id="r1",
        now=T0,
    )
    w = worker(_s(etcd_store))
    leases = etcd_store.claim(w, now=T0, limit=3)
    calls = _count_requests(etcd_store)
    assert etcd_store.finish_many([(x, ok()) for x in leases], now=T0) == ([], [])
    # a and c in one request, b in another sent at the same time (b decided on j's old
    # record: if a's request commits first, b's compare fails and b is decided again)
    assert calls.count("finish") in (2, 3)
    assert states(_s(etcd_store), "r1") == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "j": "ready",
    }


def test_etcd_finish_many_retry_after_lost_reply_records_each_once(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd_store.create_run(plans.fan_out(3), run_id="r1", now=T0)
    w = worker(_s(etcd_store))
    etcd_store.finish(claim_one(_s(etcd_store), w), ok(), now=T0)
    leases = etcd_store.claim(w, now=T0, limit=2)
    with _replies_lost(etcd_store, monkeypatch), pytest.raises(errors.StoreUnavailable):
        etcd_store.finish_many([(x, ok()) for x in leases], now=T0)
    assert etcd_store.finish_many([(x, ok()) for x in leases], now=T0) == ([], [])
    run = etcd_store.get_run("r1")
    assert run.state.value == "succeeded"
    assert [len(t.attempts) for t in run.tasks] == [1, 1, 1]
    lost, _ = etcd_store.finish_many([(x, ok()) for x in leases], now=T0)
    assert lost == [x.key for x in leases]  # a later, deliberate second finish
