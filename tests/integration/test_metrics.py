"""Metrics over real HTTP after a real run with a failure, a retry and a lost worker, on
SQLite and etcd: every scraped value matches what the store says."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner import engine
from runner.executor import Executor
from runner.metrics import Metrics
from runner.metrics.tally import retries
from runner.models import (
    AttemptState,
    Backoff,
    CronEntry,
    Kind,
    Plan,
    RetryPolicy,
    Run,
    Schedule,
    TaskSpec,
    WorkerInfo,
)
from runner.store import Store, open_store
from runner.worker import Worker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WF = "ops"


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("etcd_server")
    return f"{server.url}/metrics-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = open_store(url)
    try:
        yield s
    finally:
        s.close()


def _plan(marker: Path) -> Plan:
    def run(task_id: str, script: str, **kw: object) -> TaskSpec:
        return TaskSpec(id=task_id, name=task_id, kind=Kind.RUN, run=script, **kw)  # type: ignore[arg-type]

    flaky = f"test -f {marker} || {{ touch {marker}; exit 1; }}"
    return Plan(
        workflow=WF,
        tasks=(
            run("lost", "true", priority=5, mutex="db"),  # claimed first, by the ghost
            run("ok", "true"),
            run("flaky", flaky, retries=RetryPolicy(limit=1, backoff=Backoff(delay=0.05))),
            run("bad", "exit 3"),
        ),
    )


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _wait_end(store: Store, run_id: str) -> Run:
    deadline = time.monotonic() + 90
    while not (run := store.get_run(run_id)).state.terminal:
        assert time.monotonic() < deadline, f"run still {run.state}"
        store.wait(0.5, run_id=run_id)
    return run


@pytest.mark.slow
def test_metrics_scraped_match_the_store_after_failures_retries_and_a_lost_worker(
    url: str, store: Store, tmp_path: Path
) -> None:
    now = time.time()
    entry = CronEntry(name=WF, plan={}, plan_hash="h", schedule=Schedule(cron="@every 1h"))
    store.put_schedule(entry, now=now)
    run = engine.submit(store, _plan(tmp_path / "marker"), now=now, scheduled_time=now)
    # A ghost worker claims the high-priority task and its mutex, then never heartbeats.
    store.register_worker(WorkerInfo(id="ghost-1", name="ghost", capacity=1), now=now, ttl=3)
    (held,) = store.claim("ghost-1", now=time.time())
    assert held.task_id == "lost"
    # etcd's list_workers reports `running` from the heartbeat (SQLite counts ownership rows)
    store.heartbeat("ghost-1", now=time.time(), ttl=3, running=1)

    metrics = Metrics()
    reader = open_store(url)
    metrics.add_cluster(reader, candidate="me", min_interval=0.0)
    server = metrics.serve("127.0.0.1:0")
    try:
        before = scrape(server.url)
        assert value(before, "runner_queue_depth", band="normal", state="ready") == 3
        assert value(before, "runner_queue_depth", band="high", state="ready") == 0
        assert value(before, "runner_lock_holders", lock="mutex:db") == 1
        assert value(before, "runner_workers") == 1
        assert value(before, "runner_worker_busy_slots", worker="ghost") == 1
        assert value(before, "runner_runs", workflow=WF, state="running") == 1

        ended = _serve_until_done(url, store, run.id, tmp_path)
        after = scrape(server.url)
        _assert_matches(after, store, ended)
    finally:
        server.close()
        reader.close()


def _serve_until_done(url: str, store: Store, run_id: str, tmp_path: Path) -> Run:
    """A real worker serves the run; its sweep finds the ghost's lease expired and loses the
    attempt, which it then runs. The worker stays live for the scrape that follows."""
    worker = Worker(
        open_store(url),
        Executor(slots=2, log_dir=str(tmp_path / "logs"), log_limit=4096),
        name="real",
        concurrency=2,
        lease_ttl=10.0,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        return _wait_end(store, run_id)
    finally:
        worker.stop()
        thread.join(30)
        worker.store.close()
        worker.executor.close()


def _assert_matches(samples: Samples, store: Store, run: Run) -> None:
    tasks = {t.id: t for t in run.tasks}
    assert run.state.value == "failed"
    assert tasks["lost"].losses == 1
    assert tasks["lost"].state.value == "succeeded"
    assert value(samples, "runner_runs_finished_total", workflow=WF, state="failed") == 1
    for state in ("succeeded", "failed"):
        want = sum(t.state.value == state for t in run.tasks)
        assert value(samples, "runner_tasks_finished_total", workflow=WF, state=state) == want
    assert value(samples, "runner_attempts_lost_total", workflow=WF) == 1
    assert value(samples, "runner_task_retries_total", workflow=WF) == 1
    assert sum(retries(t) for t in run.tasks) == 1
    ran = [
        a
        for t in run.tasks
        for a in t.attempts
        if a.state in (AttemptState.SUCCEEDED, AttemptState.FAILED)
    ]
    assert value(samples, "runner_task_duration_seconds_count", workflow=WF) == len(ran)
    total = sum((a.finished_at or 0) - a.started_at for a in ran)
    assert value(samples, "runner_task_duration_seconds_sum", workflow=WF) == pytest.approx(total)
    assert value(samples, "runner_task_ready_to_claimed_seconds_count", workflow=WF) == 4
    assert value(samples, "runner_queue_depth", band="normal", state="ready") == 0
    assert store.list_locks(now=time.time()) == []  # released: no series left for it
    assert ("runner_lock_holders", (("lock", "mutex:db"),)) not in samples
    assert value(samples, "runner_workers") == len(store.list_workers(now=time.time())) == 0
    assert value(samples, "runner_schedule_last_failure_timestamp_seconds", schedule=WF) == (
        pytest.approx(run.finished_at)
    )
    assert value(samples, "runner_schedule_last_success_timestamp_seconds", schedule=WF) == 0
    assert value(samples, "runner_schedule_period_seconds", schedule=WF) == 3600
    assert value(samples, "runner_store_up") == 1
    assert value(samples, "runner_scheduler_leader_present") == 0
    assert value(samples, "runner_scheduler_leading") == 0
    assert (
        value(samples, "runner_store_op_seconds_count", op="list_runs") >= 1
    )  # the first scrape's read
