"""The "no worker" watch of `apply` on a large run (cli/waiting.Watch): it reads every task of
the run only when the run made no progress since its last look, on a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

from runner import bench, engine
from runner.cli import progress, waiting
from runner.store import open_store
from tests.contract import plans


def test_the_watch_reads_a_large_run_whole_only_when_it_stalls(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        n = progress.DETAIL_MAX + 1
        run = engine.submit(store, bench.independent(n), now=time.time())
        watch = waiting.Watch(store, run.id, cli="runner", local=False)
        assert watch._check() is None  # the first look: nothing to compare with yet
        line = watch._check()  # no task finished since: read whole, no worker named
        assert line == (
            f"run {run.id} waits: no live worker for t0 and {n - 1} more; "
            "start one with `runner worker`"
        )
        w = plans.worker(store, now=time.time(), ttl=60)
        lease = store.claim(w, now=time.time())[0]
        store.finish(lease, plans.ok(), now=time.time())
        assert watch._check() is None  # it made progress: not read whole
    finally:
        store.close()


def test_a_watch_stopped_before_its_thread_started_stops_quietly(tmp_path: Path) -> None:
    """Ctrl-C can land inside `start` (apply's finally then stops the watch): that must not
    turn the interrupt's exit into an internal error."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        waiting.Watch(store, "r", cli="runner", local=True).stop()
    finally:
        store.close()
