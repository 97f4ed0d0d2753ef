"""A worker whose wall clock is wrong (issue 15, item 3; docs/RELIABILITY.md).

Two store objects on one store, as two processes: `good` passes the real time, `skewed` the
real time moved by SKEW. Liveness must be judged by what each observer measures itself, so the
skewed process neither takes the good one's live lease nor loses its own; deadlines and
backoffs must not be cut by either clock. Time passes for real here: leases are SHORT_TTL long
and the loop below runs until more than a TTL has passed, paced by `Store.wait`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from runner.models import RunState, TaskState
from runner.store import Store, open_store
from tests.contract import plans
from tests.contract.plans import SHORT_TTL, TTL, claim_one, ok, task, worker

# (seconds the skewed clock is off, its lease ttl): the campaign's three cases
SKEWS = [(120.0, SHORT_TTL), (-120.0, SHORT_TTL), (3.0, SHORT_TTL)]


@pytest.fixture
def pair(store_url: str) -> Iterator[tuple[Store, Store]]:
    good, skewed = open_store(store_url), open_store(store_url)
    try:
        yield good, skewed
    finally:
        good.close()
        skewed.close()


@pytest.mark.parametrize(("skew", "ttl"), SKEWS, ids=["ahead120", "behind120", "ahead3"])
def test_skewed_worker_takes_no_live_lease_and_loses_none(
    pair: tuple[Store, Store], skew: float, ttl: float
) -> None:
    good, skewed = pair
    good.create_run(plans.fan_out(2), run_id="r1", now=time.time())
    g = worker(good, "good", now=time.time(), ttl=ttl)
    s = worker(skewed, "skewed", now=time.time() + skew, ttl=ttl)
    leases = [claim_one(good, g, now=time.time()), claim_one(skewed, s, now=time.time() + skew)]
    lost: list[object] = []
    end = time.monotonic() + ttl + 1.5  # past a TTL and a sweep: a wrong judge has judged
    while time.monotonic() < end:
        for store, w, off in ((good, g, 0.0), (skewed, s, skew)):
            store.heartbeat(w, now=time.time() + off, ttl=ttl, running=1)
            lost += store.sweep(now=time.time() + off)
        skewed.wait(ttl / 5)
    assert lost == []
    assert plans.states(good, "r1") == {"t0": "running", "t1": "running"}
    good.finish(leases[0], ok(), now=time.time())
    skewed.finish(leases[1], ok(), now=time.time() + skew)
    run = good.get_run("r1")
    assert run.state is RunState.SUCCEEDED
    assert [len(t.attempts) for t in run.tasks] == [1, 1]  # nothing ran twice


def two_workers(pair: tuple[Store, Store], skew: float) -> tuple[str, str]:
    """A live worker on each store object; each has seen the other's heartbeat."""
    good, skewed = pair
    g = worker(good, "good", now=time.time())
    s = worker(skewed, "skewed", now=time.time() + skew)
    good.heartbeat(g, now=time.time(), ttl=TTL, running=0)
    skewed.heartbeat(s, now=time.time() + skew, ttl=TTL, running=0)
    return g, s


@pytest.mark.parametrize("skew", [120.0, -120.0], ids=["ahead", "behind"])
def test_skewed_clock_does_not_cut_a_run_deadline(pair: tuple[Store, Store], skew: float) -> None:
    good, skewed = pair
    two_workers(pair, skew)
    timed = plans.plan(task("a"), timeout=60)
    good.create_run(timed, run_id="by-good", now=time.time())
    skewed.create_run(timed, run_id="by-skewed", now=time.time() + skew)
    assert skewed.sweep(now=time.time() + skew) == []  # judged by the skewed clock
    assert good.sweep(now=time.time()) == []  # a deadline written by the skewed clock
    for run_id in ("by-good", "by-skewed"):
        assert good.get_run(run_id).state is RunState.PENDING


@pytest.mark.parametrize("skew", [120.0, -120.0], ids=["ahead", "behind"])
def test_skewed_clock_does_not_cut_a_retry_backoff(pair: tuple[Store, Store], skew: float) -> None:
    good, skewed = pair
    g, s = two_workers(pair, skew)
    retried = plans.plan(task("a", retries=1, delay=5.0))
    good.create_run(retried, run_id="r1", now=time.time())
    good.finish(claim_one(good, g, now=time.time()), plans.fail(), now=time.time())
    assert skewed.claim(s, now=time.time() + skew) == []  # judged by the skewed clock
    good.create_run(retried, run_id="r2", now=time.time())
    leases = skewed.claim(s, now=time.time() + skew)
    assert [x.run_id for x in leases] == ["r2"]
    skewed.finish(leases[0], plans.fail(), now=time.time() + skew)
    assert good.claim(g, now=time.time()) == []  # a backoff written by the skewed clock
    states = {r: good.get_run(r).tasks[0].state for r in ("r1", "r2")}
    assert states == {"r1": TaskState.RETRYING, "r2": TaskState.RETRYING}


def test_skewed_worker_is_reported_by_list_workers(pair: tuple[Store, Store]) -> None:
    good, skewed = pair
    g, s = two_workers(pair, 120.0)
    good.heartbeat(g, now=time.time(), ttl=TTL, running=0)
    skewed.heartbeat(s, now=time.time() + 120, ttl=TTL, running=0)  # saw good's change
    good.heartbeat(g, now=time.time(), ttl=TTL, running=0)
    found = {w.name: w.clock_skew for w in good.list_workers(now=time.time())}
    assert found["skewed"] is not None
    assert found["skewed"] > 100
    assert found["good"] is not None
    assert found["good"] < -100
