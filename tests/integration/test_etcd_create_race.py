"""Two submissions of one run id at once (two backfills of a tick, a backfill and the
scheduler): the one that finds the run stored while it still writes its task chunks reports
RunExists, and the run the other stored keeps every task claimable once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runner import errors
from runner.store.etcd import EtcdStore, runs
from tests.contract import plans
from tests.contract.plans import worker


def test_a_submission_that_finds_the_run_stored_between_its_chunks_reports_it_exists(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = EtcdStore(etcd_store.client.conn, prefix=etcd_store.keys.prefix)  # another process
    plan = plans.fan_out(250)  # three chunks of at most runs.MAX_OPS operations
    first_chunk_done = threading.Event()
    real_write = runs._Chunks._write

    def write(chunks: Any, batch: Any) -> list[str]:
        written = real_write(chunks, batch)
        if not first_chunk_done.is_set():  # the other submission stores the whole run now
            first_chunk_done.set()
            other.create_run(plan, run_id="r1", now=time.time())
        return written

    monkeypatch.setattr(runs._Chunks, "_write", write)
    monkeypatch.setattr(runs, "IN_FLIGHT", 1)  # one chunk at a time: the race lands between
    try:
        with pytest.raises(errors.RunExists):
            etcd_store.create_run(plan, run_id="r1", now=time.time())
        monkeypatch.undo()
        w = worker(other, "w")
        claimed: list[str] = []
        while batch := other.claim(w, now=time.time() + 1, limit=1000):
            claimed += [lease.task_id for lease in batch]
        assert sorted(claimed) == sorted(t.id for t in plan.tasks)  # each once
    finally:
        other.close()
