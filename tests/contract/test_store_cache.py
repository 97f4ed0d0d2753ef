"""Store contract: cache entries of cached tasks (put, get, list, delete, gc) on every backend."""

from __future__ import annotations

from runner.models import CacheEntry, Outcome, Reason, RunState
from runner.store import Store
from tests.contract import plans
from tests.contract.plans import T0, claim_one, worker

DAY = 86_400.0


def _entry(
    key: str, *, at: float, workflow: str = "wf", outputs: dict[str, str] | None = None
) -> CacheEntry:
    return CacheEntry(
        key=key, workflow=workflow, task="build", run_id="r1", outputs=outputs or {}, created_at=at
    )


def test_put_then_get_returns_the_entry_and_a_later_put_replaces_it(store: Store) -> None:
    assert store.get_cache("k1") is None
    store.put_cache(_entry("k1", at=T0, outputs={"artifact": "a=b", "n": "1"}))
    assert store.get_cache("k1") == _entry("k1", at=T0, outputs={"artifact": "a=b", "n": "1"})
    store.put_cache(_entry("k1", at=T0 + 5, outputs={"n": "2"}))
    found = store.get_cache("k1")
    assert found is not None
    assert found.outputs == {"n": "2"}
    assert found.created_at == T0 + 5


def test_list_is_oldest_first_and_filters_by_workflow(store: Store) -> None:
    store.put_cache(_entry("k2", at=T0 + 2, workflow="other"))
    store.put_cache(_entry("k1", at=T0 + 1))
    store.put_cache(_entry("k3", at=T0 + 3))
    assert [e.key for e in store.list_cache()] == ["k1", "k2", "k3"]
    assert [e.key for e in store.list_cache(workflow="wf")] == ["k1", "k3"]


def test_delete_returns_the_keys_that_existed(store: Store) -> None:
    store.put_cache(_entry("k1", at=T0))
    store.put_cache(_entry("k/2", at=T0))  # a key with a slash stays one key
    assert store.delete_cache(["k1", "nope", "k/2"]) == ["k1", "k/2"]
    assert store.list_cache() == []


def test_gc_cache_deletes_entries_older_than_the_retention(store: Store) -> None:
    store.put_cache(_entry("old", at=T0 - 8 * DAY))
    store.put_cache(_entry("new", at=T0 - 1 * DAY))
    assert store.gc_cache(older_than=7 * DAY, now=T0, dry_run=True) == ["old"]
    assert {e.key for e in store.list_cache()} == {"old", "new"}
    assert store.gc_cache(older_than=7 * DAY, now=T0) == ["old"]
    assert [e.key for e in store.list_cache()] == ["new"]


def test_entries_outlive_gc_of_their_runs(store: Store) -> None:
    store.put_cache(_entry("k1", at=T0 + 6 * DAY))
    assert store.gc(older_than=DAY, now=T0 + 7 * DAY) == []
    assert store.get_cache("k1") is not None


def test_a_cached_outcome_is_recorded_succeeded_with_its_outputs(store: Store) -> None:
    store.create_run(plans.plan(plans.task("a"), plans.task("b", "a")), run_id="r1", now=T0)
    w = worker(store, now=T0)
    lease = claim_one(store, w, now=T0)
    cached = Outcome(succeeded=True, reason=Reason.CACHED, outputs={"n": "7"}, started_at=T0)
    store.finish(lease, cached, now=T0 + 1)
    run = store.get_run("r1")
    a = next(t for t in run.tasks if t.id == "a")
    assert a.cached
    assert a.outputs == {"n": "7"}
    assert a.attempts[-1].reason is Reason.CACHED
    assert a.attempts[-1].exit_code is None
    lease = claim_one(store, w, now=T0 + 1)
    assert lease.task_id == "b"
    store.finish(lease, Outcome(succeeded=True, exit_code=0), now=T0 + 2)
    run = store.get_run("r1")
    assert run.state is RunState.SUCCEEDED
    assert not next(t for t in run.tasks if t.id == "b").cached
