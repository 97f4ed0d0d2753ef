"""Ctrl-C and SIGTERM of a command that stored a run: the run's cancel is stored before the
process exits 130/143, or the command exits 3 saying it was not (docs/RELIABILITY.md)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner import engine, errors, interrupts
from runner.models import Plan, Run

if TYPE_CHECKING:
    from runner.store import Store


def cancel_interrupted(store: Store, run_id: str, *, plan: Plan | None = None) -> None:
    """Store the cancel of `run_id`, whose command was interrupted. With `plan` the interrupt
    may have cut its submission short: the run is created first if it is not there
    (create-if-absent, so a submission still in flight cannot store it later, uncancelled),
    then cancelled. Raises a StoreError (exit 3) naming the run when the cancel could not be
    stored."""
    with interrupts.held():  # a second Ctrl-C, or a SIGTERM after it, must not cut it short
        print(f"runner: cancelling run {run_id}", file=sys.stderr, flush=True)
        try:
            if plan is not None:
                with contextlib.suppress(errors.RunExists):
                    store.create_run(plan, run_id=run_id, now=time.time())
            store.cancel_run(run_id, now=time.time(), reason="interrupted")
        except errors.StoreError as exc:
            raise errors.StoreError(
                f"interrupted, but run {run_id} was not cancelled: {exc.message}; "
                f"cancel it with `runner cancel {run_id}`"
            ) from exc


def submit(store: Store, plan: Plan, *, announce: Callable[[Run], None]) -> Run:
    """Store a run of `plan` and `announce` it; an interrupt meanwhile (the submission may be
    stored, or in flight) cancels the run before the process exits."""
    now = time.time()
    run_id = engine.new_run_id(plan.workflow, now)
    try:
        run = engine.submit(store, plan, now=now, run_id=run_id)
        announce(run)
    except Exception:  # the store's or ours: nothing to cancel
        raise
    except BaseException:  # Ctrl-C or SIGTERM
        cancel_interrupted(store, run_id, plan=plan)
        raise
    return run
