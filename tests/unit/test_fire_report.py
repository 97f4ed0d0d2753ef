"""The lines `runner scheduler` and `runner serve` print: one per fired, skipped or missed tick
and one per fired run's end (on a real SQLite store, at chosen times)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cron import fire
from runner.cron.scheduler import RunEnds
from runner.store import Store, open_store
from tests.unit.test_cron import T0, registered, schedule_file


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def test_fire_due_reports_fired_skipped_and_missed_ticks(store: Store, tmp_path: Path) -> None:
    lines: list[str] = []
    path = schedule_file(tmp_path, concurrencyPolicy="Forbid", startingDeadlineSeconds="30")
    name = registered(store, path)
    for now in (T0 + 41, T0 + 101, T0 + 400):
        fire.fire_due(store, store.get_schedule(name), now=now, report=lines.append)
    first = "job-cron-20231114T221400"
    assert lines == [
        f"schedule job: tick 2023-11-14T22:14:00Z fired as run {first}",
        f"schedule job: tick 2023-11-14T22:15:00Z skipped: run {first} is still active "
        "(concurrencyPolicy Forbid)",
        "schedule job: 4 tick(s) missed (past startingDeadlineSeconds, or passed over by "
        "catchup: latest)",
        f"schedule job: tick 2023-11-14T22:20:00Z skipped: run {first} is still active "
        "(concurrencyPolicy Forbid)",
    ]


def test_run_ends_reports_each_watched_run_once_when_it_ends(store: Store, tmp_path: Path) -> None:
    lines: list[str] = []
    name = registered(store, schedule_file(tmp_path))
    fired = fire.fire_due(store, store.get_schedule(name), now=T0 + 41, report=lambda _: None)
    run_id = fired[0].run_id
    assert run_id is not None
    ends = RunEnds(store, report=lines.append)
    ends.watch(run_id)
    ends.check()
    assert lines == []  # still pending
    store.cancel_run(run_id, now=T0 + 50)
    ends.check()
    ends.check()
    assert len(lines) == 1
    assert lines[0].startswith(f"run {run_id} cancelled in ")
