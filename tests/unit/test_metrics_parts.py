"""The pieces of runner.metrics and the CLI's JSON log lines: tallies, addresses, formatter,
timed store operations."""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path

import pytest

from runner import engine, errors
from runner.cli import logfmt
from runner.metrics import ClusterCollector, Metrics
from runner.metrics.serve import parse_addr, resolve
from runner.metrics.tally import Hist, band, tally
from runner.models import (
    Attempt,
    AttemptState,
    Kind,
    Outcome,
    Plan,
    Reason,
    Run,
    RunState,
    TaskRecord,
    TaskSpec,
    TaskState,
    WorkerInfo,
)
from runner.store import Store, open_store


def _attempt(n: int, state: AttemptState, start: float, end: float | None) -> Attempt:
    return Attempt(
        number=n,
        state=state,
        worker="w",
        token=n,
        started_at=start,
        finished_at=end,
        reason=Reason.LOST if state is AttemptState.LOST else Reason.EXIT,
    )


def test_tally_counts_terminal_tasks_losses_retries_durations_and_waits() -> None:
    run = Run(
        id="r",
        workflow="wf",
        state=RunState.RUNNING,
        tasks=(
            TaskRecord(
                id="a",
                name="a",
                state=TaskState.SUCCEEDED,
                priority=0,
                ready_at=10.0,
                losses=1,
                attempts=(
                    _attempt(1, AttemptState.LOST, 11.0, 12.0),
                    _attempt(2, AttemptState.FAILED, 13.0, 14.0),
                    _attempt(3, AttemptState.SUCCEEDED, 16.0, 18.5),
                ),
            ),
            TaskRecord(id="b", name="b", state=TaskState.READY, priority=3, ready_at=20.0),
        ),
    )
    t = tally(run)
    assert dict(t.tasks) == {"succeeded": 1}
    assert (t.losses, t.retries) == (1, 1)
    assert (t.duration.n, t.duration.total) == (2, 3.5)
    assert (t.wait.n, t.wait.total) == (1, 6.0)  # the latest attempt, from ready_at


def test_hist_buckets_are_cumulative_with_inf_last() -> None:
    h = Hist((1.0, 5.0))
    for v in (0.5, 1.0, 3.0, 9.0):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2.0), ("5.0", 3.0), ("+Inf", 4.0)]


def test_priority_bands() -> None:
    assert [band(p) for p in (-5, 0, 1)] == ["low", "normal", "high"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_addr(text: str, want: tuple[str, int]) -> None:
    assert parse_addr(text) == want


@pytest.mark.parametrize("text", ["9464", ":9464", "127.0.0.1:x", "127.0.0.1:70000", "[::1]"])
def test_parse_addr_rejects_with_the_argument_named(text: str) -> None:
    with pytest.raises(errors.UsageError, match=r"--metrics-addr .*expected HOST:PORT"):
        parse_addr(text)


def test_resolve_needs_allow_remote_beyond_loopback() -> None:
    assert resolve("127.0.0.1", 0, allow_remote=False)[1] == "127.0.0.1"
    assert resolve("localhost", 0, allow_remote=False)[1] in ("127.0.0.1", "::1")
    with pytest.raises(errors.UsageError, match="not a loopback address"):
        resolve("0.0.0.0", 0, allow_remote=False)
    assert resolve("0.0.0.0", 0, allow_remote=True)[1] == "0.0.0.0"


def test_json_formatter_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("runner.test_logfmt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        handler.setFormatter(logfmt.JsonFormatter(worker="w-1"))
        logger.info("claimed %s", "r/t", extra={"action": "task_claimed", "run_id": "r"})
        logger.warning("lease lost: %s", "x")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "info",
        "component": "test_logfmt",
        "event": "task_claimed",
        "run": "r",
        "task": None,
        "worker": "w-1",
        "message": "claimed r/t",
    }
    assert first["time"].endswith("Z")
    assert "T" in first["time"]
    assert second["event"] == "lease lost: %s"  # the template: bounded, indexable


def test_announce_in_json_mode_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(log_format="json")
    logfmt.announce(args, "worker w serving x", event="worker_serving", worker_id="w")
    record = json.loads(capsys.readouterr().err)
    assert (record["event"], record["worker"], record["message"]) == (
        "worker_serving",
        "w",
        "worker w serving x",
    )


def test_instrumented_store_times_operations_and_counts_errors(tmp_path: Path) -> None:
    metrics = Metrics(process=False)
    store = metrics.instrument(open_store(f"sqlite:///{tmp_path / 'state.db'}"))
    try:
        assert store.list_runs() == []
        with pytest.raises(errors.RunNotFound):
            store.get_run("nope")
        assert store.finish_batch_wait >= 0  # attributes pass through
    finally:
        store.close()
    text = metrics.exposition().decode()
    assert 'runner_store_op_seconds_count{op="list_runs"} 1.0' in text
    assert 'runner_store_op_errors_total{error="RunNotFound",op="get_run"} 1.0' in text
    assert 'op="close"' not in text


def _one_task_run(store: Store, workflow: str, *, now: float) -> None:
    """Submit a one-task run and finish it, succeeded, through a registered worker."""
    plan = Plan(workflow=workflow, tasks=(TaskSpec(id="t", name="t", kind=Kind.RUN, run="true"),))
    engine.submit(store, plan, now=now)
    store.register_worker(WorkerInfo(id="w", name="w"), now=now, ttl=60)
    (lease,) = store.claim("w", now=now)
    store.finish(lease, Outcome(succeeded=True, exit_code=0), now=now + 1)


def test_collector_counts_runs_seen_unfinished_once_and_keeps_them_after_gc(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        now = time.time()
        _one_task_run(store, "before", now=now)  # ended before the first collection
        collector = ClusterCollector(store, min_interval=0.0, task_interval=0.0)
        first = collector.snapshot()
        assert first.runs == {("before", "succeeded"): 1}
        assert first.tallies == {}
        assert not first.finished

        _one_task_run(store, "after", now=now)
        for _ in range(2):  # counted once, however often it is collected
            snap = collector.snapshot()
            assert snap.finished == {("after", "succeeded"): 1}
            assert dict(snap.tallies["after"].tasks) == {"succeeded": 1}
            assert snap.tallies["after"].duration.n == 1

        assert len(store.gc(older_than=0.0, now=now + 10)) == 2
        gone = collector.snapshot()
        assert gone.runs == {}
        assert gone.finished == {("after", "succeeded"): 1}  # counters stay monotonic
        assert dict(gone.tallies["after"].tasks) == {"succeeded": 1}
    finally:
        store.close()
