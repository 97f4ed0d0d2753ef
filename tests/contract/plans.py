"""Small plans and helpers for the store contract suite: built from models only, no backend."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from runner.models import (
    Backoff,
    Kind,
    Lease,
    Outcome,
    Plan,
    Reason,
    RetryPolicy,
    TaskSpec,
    When,
    WorkerInfo,
)
from runner.store import Store

T0 = 1_700_000_000.0  # a fixed "now" for tests
TTL = 600.0  # worker lease in tests that do not exercise expiry
SHORT_TTL = 2.0  # worker lease in tests that let it expire (real seconds on etcd)

_ids = itertools.count(1)


def task(
    task_id: str,
    *depends: str,
    priority: int = 0,
    when: When = When.SUCCESS,
    allow_failure: bool = False,
    retries: int = 0,
    delay: float = 10.0,
    run: str = "true",
    selector: Mapping[str, str] | None = None,
) -> TaskSpec:
    """A shell task with the given dependencies and options."""
    return TaskSpec(
        id=task_id,
        name=task_id,
        kind=Kind.RUN,
        run=run,
        priority=priority,
        depends=tuple(depends),
        when=when,
        allow_failure=allow_failure,
        retries=RetryPolicy(limit=retries, backoff=Backoff(delay=delay, factor=2.0)),
        selector=dict(selector or {}),
    )


def plan(*tasks: TaskSpec, workflow: str = "wf", **options: Any) -> Plan:
    """A plan of the given tasks (in the given, topological, order)."""
    return Plan(workflow=workflow, tasks=tuple(tasks), hash=f"h-{workflow}", **options)


def linear(n: int, **options: Any) -> Plan:
    """t0 -> t1 -> ... -> t(n-1)."""
    return plan(*(task(f"t{i}", *([f"t{i - 1}"] if i else [])) for i in range(n)), **options)


def diamond(**options: Any) -> Plan:
    """a -> (b, c) -> d."""
    return plan(task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c"), **options)


def fan_out(n: int, *, priorities: Iterable[int] | None = None, **options: Any) -> Plan:
    """n independent tasks t0..t(n-1), optionally with priorities."""
    prios = list(priorities) if priorities is not None else [0] * n
    return plan(*(task(f"t{i}", priority=prios[i]) for i in range(n)), **options)


def new_run_id() -> str:
    return f"run-{next(_ids):06d}"


def worker(store: Store, name: str = "w", *, now: float = T0, ttl: float = TTL) -> str:
    """Register a worker; its id."""
    worker_id = f"{name}-{next(_ids)}"
    store.register_worker(WorkerInfo(id=worker_id, name=name), now=now, ttl=ttl)
    return worker_id


def ok(**outputs: str) -> Outcome:
    return Outcome(succeeded=True, exit_code=0, outputs=dict(outputs))


def fail(code: int = 1) -> Outcome:
    return Outcome(succeeded=False, reason=Reason.EXIT, exit_code=code, error=f"exit {code}")


def claim_one(store: Store, worker_id: str, *, now: float = T0) -> Lease:
    """Claim exactly one task (fails the test when none is claimable)."""
    leases = store.claim(worker_id, now=now)
    assert len(leases) == 1, f"expected one claimable task, got {leases}"
    return leases[0]


def drain(
    store: Store,
    worker_id: str,
    *,
    now: float = T0,
    outcome: Callable[[Lease], Outcome] = lambda _lease: ok(),
) -> list[str]:
    """Claim and finish tasks until none is claimable; the task ids in claim order."""
    order = []
    while leases := store.claim(worker_id, now=now):
        for lease in leases:
            order.append(lease.task_id)
            store.finish(lease, outcome(lease), now=now)
    return order


def states(store: Store, run_id: str) -> dict[str, str]:
    """Task id -> state of a run."""
    return {t.id: t.state.value for t in store.get_run(run_id).tasks}


def expire_worker(
    store: Store, worker_id: str, *, now: float, ttl: float, deadline: float = 15.0
) -> float:
    """Move past the expiry of a worker lease opened (or renewed) at `now` for `ttl` seconds;
    returns the `now` to pass to `sweep`. Embedded stores take time as a parameter, so this
    returns at once; a backend whose leases expire on its own clock (etcd) is polled here, in
    real time, until the worker is gone from `list_workers` (an event-style wait with a
    deadline, never a bare sleep). Tests that use it register the worker with SHORT_TTL."""
    later = now + ttl + 1.0
    limit = time.monotonic() + deadline
    while any(w.id == worker_id for w in store.list_workers(now=later)):
        if time.monotonic() > limit:
            raise AssertionError(f"worker {worker_id}: lease of {ttl}s alive after {deadline}s")
        store.wait(0.05)
    return later


def claim_all(url: str, name: str, barrier: Any, out: Any) -> None:
    """Process body for concurrency tests: open the store, wait for the others, claim and
    finish until nothing is claimable, then report (run, task, attempt, token) per claim."""
    from runner.store import open_store

    store = open_store(url)
    try:
        worker_id = worker(store, name)
        barrier.wait(timeout=30)
        claimed = []
        while leases := store.claim(worker_id, now=T0, limit=2):
            for lease in leases:
                claimed.append((lease.run_id, lease.task_id, lease.attempt, lease.token))
                store.finish(lease, ok(), now=T0)
        out.put(claimed)
    finally:
        store.close()
