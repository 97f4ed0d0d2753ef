"""The claim loop's idle wait (`worker._idle.IdleWait`) on real SQLite stores: a change that
comes after the claim loop's `seen()` wakes it, whichever request the idle thread's
`Store.wait` was made for."""

from __future__ import annotations

from pathlib import Path

from runner.store import open_store
from runner.worker._idle import IdleWait
from tests.contract import plans
from tests.contract.plans import T0

WAIT = 20.0


def test_a_change_after_seen_wakes_the_wait_even_when_an_earlier_request_saw_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    worker_store, submitter = open_store(url), open_store(url)
    idle = IdleWait(worker_store)
    try:
        seen = idle.seen()
        assert idle.wait(WAIT, seen)  # the idle thread's first Store.wait: nothing seen yet
        seen = idle.seen()
        worker_store.list_runs()  # the claim loop looks: nothing to claim
        # Its earlier wait timed out while the idle thread's Store.wait goes on for it...
        assert idle.wait(0.0, seen) is False
        # ...and a run is submitted before the claim loop asks again.
        submitter.create_run(plans.linear(1), run_id="r1", now=T0)
        # The idle thread's current Store.wait returns for the submit and marks it seen: the
        # request made after it must be answered by that change, not by the next one.
        assert idle.wait(WAIT, seen) is True
        assert idle.seen() > seen
        # Nothing new since: a wait from the latest mark times out.
        assert idle.wait(0.05, idle.seen()) is False
    finally:
        idle.stop()
        idle.join(WAIT)
        worker_store.close()
        submitter.close()
