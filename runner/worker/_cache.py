"""Cached tasks on the worker: look an attempt's cache key up before starting a process, and
record the success of a cached task (docs/WORKFLOW.md "Cached tasks")."""

from __future__ import annotations

import logging

from runner import cache, errors
from runner.models import CacheEntry, Lease, Outcome, Reason
from runner.store.base import Store

logger = logging.getLogger(__name__)


class CacheCheck:
    """The worker's side of the cache: the key is computed here, when the attempt starts, from
    the plan-time fingerprint (runner.cache) and the upstream outputs the claim brought."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def lookup(self, lease: Lease, *, now: float) -> Outcome | None:
        """A succeeded, `cached` outcome with the entry's outputs on a fresh hit; else None
        (also when the store cannot be read: the task then runs)."""
        policy = lease.spec.cache
        if policy is None or policy.refresh:
            return None
        key = cache.cache_key(lease.spec, lease.context)
        try:
            entry = self._store.get_cache(key)
        except errors.StoreError as exc:
            logger.warning("cache lookup of %s/%s failed: %s", lease.run_id, lease.task_id, exc)
            return None
        if entry is None or not cache.fresh(entry, policy, now=now):
            return None
        logger.info(
            "cache hit %s/%s from %s/%s",
            lease.run_id,
            lease.task_id,
            entry.run_id,
            entry.task,
            extra={"action": "task_cached", "run_id": lease.run_id},
        )
        note = f"runner: cached: outputs of {entry.run_id} {entry.task} (key {key[:12]})\n"
        return Outcome(
            succeeded=True,
            reason=Reason.CACHED,
            outputs=dict(entry.outputs),
            log_tail=note,
            started_at=now,
        )

    def remember(self, lease: Lease, outcome: Outcome, *, now: float) -> None:
        """Record a cached task's success (a failure to write only costs a later rerun)."""
        if lease.spec.cache is None or not outcome.succeeded or outcome.reason is Reason.CACHED:
            return
        try:
            workflow = self._store.get_run(lease.run_id, tasks=False).workflow
            entry = CacheEntry(
                key=cache.cache_key(lease.spec, lease.context),
                outputs=dict(outcome.outputs),
                workflow=workflow,
                task=lease.task_id,
                run_id=lease.run_id,
                created_at=now,
            )
            self._store.put_cache(entry)
        except errors.RunnerError as exc:
            logger.warning("cache entry of %s/%s not written: %s", lease.run_id, lease.task_id, exc)
