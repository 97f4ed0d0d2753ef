"""Tick computation and firing policies against an injected clock: time zones, DST both ways,
missed ticks and the starting deadline, catchup all, Allow / Forbid / Replace, folder sync."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import cronexpr, errors, workflow
from runner.cron import fire, ticks
from runner.cron.folder import FolderSync
from runner.cron.scheduler import Scheduler
from runner.models import ConcurrencyPolicy, Schedule
from runner.store import Store, open_store

BERLIN = "Europe/Berlin"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def at(tz: str, year: int, month: int, day: int, hour: int = 0) -> float:
    return dt.datetime(year, month, day, hour, tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()


def local(ts: float, tz: str = BERLIN) -> str:
    return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz)).strftime("%m-%d %H:%M%z")


# ------------------------------------------------------------------ time zones and DST


def test_due_ticks_daily_in_time_zone() -> None:
    got = ticks.due_ticks(
        "0 2 * * *", BERLIN, since=at(BERLIN, 2026, 1, 1), until=at(BERLIN, 2026, 1, 3)
    )
    assert [local(t) for t in got] == ["01-01 02:00+0100", "01-02 02:00+0100"]
    utc = ticks.due_ticks(
        "0 2 * * *", "UTC", since=at("UTC", 2026, 1, 1), until=at("UTC", 2026, 1, 2)
    )
    assert utc == [at("UTC", 2026, 1, 1, 2)]


def test_due_ticks_spring_forward_daily_0230_runs_once_at_0300() -> None:
    day = ticks.due_ticks(
        "30 2 * * *", BERLIN, since=at(BERLIN, 2026, 3, 28, 12), until=at(BERLIN, 2026, 3, 30, 12)
    )
    assert [local(t) for t in day] == ["03-29 03:00+0200", "03-30 02:30+0200"]


def test_due_ticks_spring_forward_hourly_skips_missing_hour() -> None:
    got = ticks.due_ticks(
        "30 * * * *", BERLIN, since=at(BERLIN, 2026, 3, 29), until=at(BERLIN, 2026, 3, 30)
    )
    assert len(got) == 23
    assert "03-29 02:30+0100" not in [local(t) for t in got]


def test_due_ticks_fall_back_daily_0230_runs_once() -> None:
    got = ticks.due_ticks(
        "30 2 * * *", BERLIN, since=at(BERLIN, 2026, 10, 24, 12), until=at(BERLIN, 2026, 10, 26, 12)
    )
    assert [local(t) for t in got] == ["10-25 02:30+0200", "10-26 02:30+0100"]


def test_due_ticks_fall_back_hourly_runs_every_real_hour() -> None:
    got = ticks.due_ticks(
        "30 * * * *", BERLIN, since=at(BERLIN, 2026, 10, 25), until=at(BERLIN, 2026, 10, 26)
    )
    assert len(got) == 25


def test_every_ignores_time_zones_and_dst() -> None:
    since = at(BERLIN, 2026, 10, 25)
    got = ticks.due_ticks("@every 1h", BERLIN, since=since, until=since + 25 * 3600)
    assert len(got) == 25
    assert all(b - a == 3600 for a, b in itertools.pairwise(got))


def test_next_ticks_and_latest_tick() -> None:
    assert ticks.next_ticks("@every 5m", "UTC", after=T0, count=2) == [T0 + 100, T0 + 400]
    assert ticks.latest_tick("@every 5m", "UTC", at=T0 + 100) == T0 + 100
    assert ticks.latest_tick("@every 5m", "UTC", at=T0 + 99) == T0 - 200
    fallback = at(BERLIN, 2026, 10, 25, 4)
    assert local(ticks.latest_tick("30 2 * * *", BERLIN, at=fallback)) == "10-25 02:30+0200"


def test_six_field_cron_with_seconds() -> None:
    got = ticks.due_ticks("*/15 * * * * *", "UTC", since=T0, until=T0 + 60)
    assert [t - T0 for t in got] == [10, 25, 40, 55]


# ------------------------------------------------------------------ missed ticks


def every(step: str = "1m", **kw: object) -> Schedule:
    return Schedule(cron=f"@every {step}", **kw)  # type: ignore[arg-type]


def test_decide_nothing_due() -> None:
    assert ticks.decide(every(), since=T0, now=T0 + 30) == ticks.Due()


def test_decide_latest_fires_newest_and_counts_others_missed() -> None:
    due = ticks.decide(every(), since=T0 - 20, now=T0 + 600)  # ticks T0+40 .. T0+580
    assert due.fire == (T0 + 580,)
    assert (due.missed, due.last) == (9, T0 + 580)


def test_decide_deadline_passed_fires_nothing_records_missed() -> None:
    due = ticks.decide(every(starting_deadline=10.0), since=T0 - 20, now=T0 + 600)
    assert (due.fire, due.missed, due.last) == ((), 10, T0 + 580)


def test_decide_deadline_keeps_recent_tick() -> None:
    due = ticks.decide(every(starting_deadline=30.0), since=T0 - 20, now=T0 + 600)
    assert due.fire == (T0 + 580,)
    assert due.missed == 9


def test_decide_catchup_all_fires_window_oldest_first() -> None:
    due = ticks.decide(every(starting_deadline=200.0, catchup="all"), since=T0 - 20, now=T0 + 600)
    assert due.fire == (T0 + 460, T0 + 520, T0 + 580)
    assert due.missed == 7


def test_decide_catchup_all_is_bounded_per_step() -> None:
    due = ticks.decide(every("1s", catchup="all"), since=T0, now=T0 + 1000)
    assert len(due.fire) == ticks.MAX_CATCHUP
    assert due.fire[0] == T0 + 1


def test_count_ticks_long_outage_is_arithmetic_for_every() -> None:
    assert ticks.count_ticks("@every 1s", "UTC", since=T0, until=T0 + 365 * 86400) == 365 * 86400


# ------------------------------------------------------------------ firing and policies


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def schedule_file(tmp_path: Path, name: str = "job", cron: str = "@every 1m", **spec: str) -> Path:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"apiVersion: runner/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n"
        f"  schedule: '{cron}'\n{extra}  tasks:\n    - name: t\n      run: 'true'\n"
    )
    return path


def registered(store: Store, path: Path, *, now: float = T0) -> str:
    plan = workflow.load_plan(path)
    assert fire.register(store, plan, now=now)
    return plan.workflow


def test_fire_due_creates_run_once_with_derived_id(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path))
    entry = store.get_schedule(name)
    fired = fire.fire_due(store, entry, now=T0 + 70)
    assert [f.run_id for f in fired] == ["job-cron-20231114T221400"]
    run = store.get_run("job-cron-20231114T221400", tasks=False)
    assert (run.scheduled_time, run.key) == (T0 + 40, "cron:job:20231114T221400")
    again = fire.fire_due(store, entry, now=T0 + 70)  # a stale scheduler with the old entry
    assert [f.created for f in again] == [False]
    assert len(store.list_runs()) == 1
    assert store.get_schedule(name).last_tick == T0 + 40


def test_fire_due_records_missed(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path, startingDeadlineSeconds="5"))
    fire.fire_due(store, store.get_schedule(name), now=T0 + 3600)
    entry = store.get_schedule(name)
    assert (entry.missed, entry.last_run_id, store.list_runs()) == (60, None, [])


def test_forbid_skips_while_previous_run_active(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path, concurrencyPolicy="Forbid"))
    fire.fire_due(store, store.get_schedule(name), now=T0 + 41)
    fired = fire.fire_due(store, store.get_schedule(name), now=T0 + 101)
    assert [f.run_id for f in fired] == [None]
    entry = store.get_schedule(name)
    assert (entry.skipped, entry.last_tick, len(store.list_runs())) == (1, T0 + 100, 1)


def test_forbid_fires_when_previous_run_finished(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path, concurrencyPolicy="Forbid"))
    first = fire.fire_due(store, store.get_schedule(name), now=T0 + 41)[0].run_id
    assert first is not None
    store.cancel_run(first, now=T0 + 50)
    fired = fire.fire_due(store, store.get_schedule(name), now=T0 + 101)
    assert fired[0].created


def test_replace_cancels_previous_run(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path, concurrencyPolicy="Replace"))
    first = fire.fire_due(store, store.get_schedule(name), now=T0 + 41)[0].run_id
    assert first is not None
    second = fire.fire_due(store, store.get_schedule(name), now=T0 + 101)[0]
    assert second.created
    old = store.get_run(first, tasks=False)
    assert (old.state.value, old.reason) == ("cancelled", f"replaced by {second.run_id}")


def test_allow_overlaps(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path))
    assert store.get_schedule(name).schedule.concurrency_policy is ConcurrencyPolicy.ALLOW
    fire.fire_due(store, store.get_schedule(name), now=T0 + 41)
    fire.fire_due(store, store.get_schedule(name), now=T0 + 101)
    assert [r.state.value for r in store.list_runs()] == ["pending", "pending"]


def test_suspended_schedule_fires_nothing(store: Store, tmp_path: Path) -> None:
    name = registered(store, schedule_file(tmp_path, suspend="true"))
    assert fire.fire_due(store, store.get_schedule(name), now=T0 + 600) == []
    resumed = store.suspend_schedule(name, suspended=False, now=T0 + 600)
    assert fire.fire_due(store, resumed, now=T0 + 601) == []


def test_scheduler_step_fires_as_leader_only(store: Store, tmp_path: Path) -> None:
    registered(store, schedule_file(tmp_path))
    a = Scheduler(store, candidate="a", lease_ttl=30)
    b = Scheduler(store, candidate="b", lease_ttl=30)
    assert a.step(T0 + 41) > 0
    b.step(T0 + 60)
    assert (a.leading, b.leading, len(store.list_runs())) == (True, False, 1)
    b._renewed = float("-inf")  # let b campaign again at once (the injected clock jumps)
    b.step(T0 + 101)  # a's lease (30 s from T0 + 41) has lapsed: b takes over and fires
    assert (b.leading, len(store.list_runs())) == (True, 2)


# ------------------------------------------------------------------ folder sync


def test_folder_sync_applies_reports_invalid_and_removes_deleted(
    store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    schedule_file(folder, "a")
    schedule_file(folder, "b")
    (folder / "bad.yaml").write_text("apiVersion: runner/v1\nkind: Workflow\nspec: [\n")
    reports: list[str] = []
    sync = FolderSync(store, folder, report=reports.append)
    sync.sync(now=T0)
    assert [e.name for e in store.list_schedules()] == ["a", "b"]
    assert any("bad.yaml:" in r and "skipped" in r for r in reports)
    (folder / "b.yaml").unlink()
    schedule_file(folder, "a", cron="@every 2m")
    sync.sync(now=T0 + 1)
    assert [(e.name, e.schedule.cron) for e in store.list_schedules()] == [("a", "@every 2m")]


def test_folder_sync_invalid_change_keeps_previous_schedule(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    path = schedule_file(folder, "a")
    sync = FolderSync(store, folder, report=lambda text: None)
    sync.sync(now=T0)
    path.write_text(path.read_text().replace("@every 1m", "@every nope"))
    sync.sync(now=T0 + 1)
    assert store.get_schedule("a").schedule.cron == "@every 1m"


def test_register_without_schedule_is_usage_error(tmp_path: Path) -> None:
    plan = dataclasses.replace(workflow.load_plan(schedule_file(tmp_path)), schedule=None)
    with pytest.raises(errors.UsageError):
        fire.entry_for(plan)


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("0 25 * * *", "the hour field '25' is not valid; it takes 0-23"),
        ("61 * * * *", "the minute field '61' is not valid; it takes 0-59"),
        ("0 0 32 * *", "the day of month field '32' is not valid; it takes 1-31"),
        ("0 0 * 13 *", "the month field '13' is not valid; it takes 1-12 or jan-dec"),
        ("0 0 * * 8", "the day of week field '8' is not valid"),
        ("70 0 0 * * *", "the second field '70' is not valid; it takes 0-59"),
    ],
)
def test_schedule_out_of_range_names_the_field_and_its_range(expr: str, field: str) -> None:
    problem = cronexpr.check_schedule(expr)
    assert problem is not None
    assert field in problem
    assert "not acceptable" not in problem
