"""Sub-runs on the worker: a `workflow:` task submits its planned child run to the same store
and follows it; the child's end decides the attempt's (docs/WORKFLOW.md "Sub-runs")."""

from __future__ import annotations

import contextlib
import re
import threading
import time

from runner import engine, errors, planview
from runner.models import Lease, Outcome, Reason, Run, RunState
from runner.store.base import Store

POLL = 1.0  # seconds between looks at the child when no change wakes the follower
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def child_run_id(run_id: str, task_id: str, attempt: int) -> str:
    """The child run of one attempt: the same on every worker, so a re-executed attempt finds
    the run its predecessor created instead of starting another."""
    return f"{run_id}--{_UNSAFE.sub('_', task_id)}-{attempt}"


class SubRuns:
    """Runs the attempts of `workflow:` tasks; holds a slot while the child runs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def run(self, lease: Lease, cancel: threading.Event, *, now: float) -> Outcome:
        sub = lease.spec.subrun
        if sub is None:
            return Outcome(succeeded=False, reason=Reason.ERROR, error="no planned sub-run")
        child = child_run_id(lease.run_id, lease.task_id, lease.attempt)
        if lease.attempt > 1:  # a lost or failed attempt's child must not run on
            self._cancel(child_run_id(lease.run_id, lease.task_id, lease.attempt - 1), now=now)
        key = f"subrun:{lease.run_id}:{lease.task_id}:{lease.attempt}"
        plan = planview.plan_from_json(sub.plan)
        with contextlib.suppress(errors.RunExists):  # this attempt's child exists: follow it
            engine.submit(self._store, plan, now=now, run_id=child, key=key)
        timeout = lease.spec.timeout
        deadline = None if timeout is None else now + timeout
        run, why = self._follow(child, cancel, deadline)
        return _outcome(run, why)

    def _follow(
        self, child: str, cancel: threading.Event, deadline: float | None
    ) -> tuple[Run, Reason]:
        why = Reason.EXIT
        while True:
            run = self._store.get_run(child, tasks=False)
            if run.state.terminal and run.tasks_done >= run.tasks_total:
                return run, why
            if why is Reason.EXIT and cancel.is_set():
                why = Reason.CANCELLED
                self._store.cancel_run(child, now=time.time(), reason="parent cancelled")
            elif why is Reason.EXIT and deadline is not None and time.time() >= deadline:
                why = Reason.TIMEOUT
                self._store.cancel_run(child, now=time.time(), reason="parent task timed out")
            wait = POLL if deadline is None else max(0.0, min(POLL, deadline - time.time()))
            self._store.wait(wait, run_id=child)

    def _cancel(self, run_id: str, *, now: float) -> None:
        try:
            if not self._store.get_run(run_id, tasks=False).state.terminal:
                self._store.cancel_run(run_id, now=now, reason="parent task retried")
        except errors.RunNotFound:
            pass


def _outcome(run: Run, why: Reason) -> Outcome:
    ok = run.state is RunState.SUCCEEDED and why is Reason.EXIT
    note = f"runner: sub-run {run.id} {run.state.value}\n"
    return Outcome(
        succeeded=ok,
        reason=why,
        exit_code=engine.exit_code(run) if why is Reason.EXIT else None,
        outputs={"run_id": run.id, "state": run.state.value},
        error=None if ok else f"sub-run {run.id} {run.state.value}",
        log_tail=note,
    )
