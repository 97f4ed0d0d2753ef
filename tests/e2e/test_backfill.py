"""`runner cron backfill` through the real CLI on both stores: the scheduler's run ids, ticks
that already have a run skipped, the ticks `runner cron next` gives across DST changes."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from pathlib import Path

import pytest

from runner.cron import fire, ticks
from runner.store import open_store
from tests.e2e.helpers import REPO, Cli, tasks_by_id

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _register(cli: Cli, name: str) -> None:
    res = cli.run("apply", cli.workflow(name))
    assert res.returncode == 0, res.stderr


def _dry(cli: Cli, name: str, start: str, end: str) -> list[str]:
    res = cli.run("cron", "backfill", name, "--from", start, "--to", end, "--dry-run")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def _next_ticks(expr: str, start: str, end: str) -> list[str]:
    """What `runner cron next` lists from `start` on, up to `end` (ticks.next_ticks)."""
    lo = dt.datetime.fromisoformat(start).replace(tzinfo=BERLIN).timestamp()
    hi = dt.datetime.fromisoformat(end).replace(tzinfo=BERLIN).timestamp()
    found = ticks.next_ticks(expr, "Europe/Berlin", after=lo - 1, count=100)
    return [
        dt.datetime.fromtimestamp(t, BERLIN).isoformat(timespec="seconds") for t in found if t <= hi
    ]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (  # spring forward: 02:00-03:00 does not exist; no 02:30 tick that night
            "2026-03-29T00:00",
            "2026-03-29T04:00",
            ["2026-03-29T00:30:00+01:00", "2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"],
        ),
        (  # fall back: 02:30 happens twice, an hourly job runs at both
            "2026-10-25T01:00",
            "2026-10-25T03:45",
            [
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:30:00+01:00",
            ],
        ),
    ],
)
def test_hourly_ticks_across_dst_are_those_of_cron_next(
    tmp_path: Path, start: str, end: str, expected: list[str]
) -> None:
    cli = Cli(tmp_path)
    _register(cli, "hourly-berlin.yaml")
    assert _dry(cli, "hourly-berlin", start, end) == expected
    assert _next_ticks("30 * * * *", start, end) == expected


def test_daily_ticks_across_both_dst_changes(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    _register(cli, "daily-berlin.yaml")
    spring = _dry(cli, "daily-berlin", "2026-03-28", "2026-03-30")
    assert spring == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist: the first valid time after it
        "2026-03-30T02:30:00+02:00",
    ]
    autumn = _dry(cli, "daily-berlin", "2026-10-24", "2026-10-26")
    assert autumn == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",  # once, at the first of the two 02:30s
        "2026-10-26T02:30:00+01:00",
    ]
    assert spring == _next_ticks("30 2 * * *", "2026-03-28T00:00", "2026-03-30T23:59")
    assert autumn == _next_ticks("30 2 * * *", "2026-10-24T00:00", "2026-10-26T23:59")


def test_backfill_runs_each_tick_once_with_the_schedulers_run_ids(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _register(cli, "hourly-berlin.yaml")
    store = open_store(cli.env["RUNNER_STORE"])
    try:  # the live scheduler fires the 00:30 UTC tick first
        entry = store.get_schedule("hourly-berlin")
        tick = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC).timestamp()
        assert fire.fire_tick(store, entry, tick, now=tick).created
    finally:
        store.close()
    args = ["cron", "backfill", "hourly-berlin", "--from", "2026-03-29T00:00", "--to"]
    res = cli.run(*args, "2026-03-29T02:00", "--workers", "2", "--parallel", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = sorted(res.stdout.splitlines())  # printed as each tick is done with
    assert lines[0].endswith("hourly-berlin-cron-20260328T233000  succeeded")
    assert lines[1].endswith("hourly-berlin-cron-20260329T003000  exists, skipped")
    # a failing tick makes the exit code 1, as with apply; the earlier ticks are skipped
    res = cli.run(*args, "2026-03-29T04:00", "--workers", "2", "--reverse")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "hourly-berlin-cron-20260329T013000  failed" in res.stdout
    runs = json.loads(cli.run("get", "runs", "-o", "json").stdout)
    ids = sorted(r["id"] for r in runs)
    assert ids == [
        "hourly-berlin-cron-20260328T233000",
        "hourly-berlin-cron-20260329T003000",
        "hourly-berlin-cron-20260329T013000",
    ]
    scheduled = {r["id"]: r["scheduled_time"] for r in runs}
    assert scheduled["hourly-berlin-cron-20260329T013000"] == "2026-03-29T01:30:00.000Z"
    assert "2026-03-28T23:30:00Z" in (cli.cwd / "ticks.txt").read_text().split()


def test_concurrent_backfills_never_duplicate_a_run(any_store_cli: Cli) -> None:
    cli = any_store_cli
    _register(cli, "hourly-berlin.yaml")
    args = ["cron", "backfill", "hourly-berlin", "--from", "2026-03-01", "--to", "2026-03-02"]
    procs = [cli.start(*args, "--detach"), cli.start(*args, "--detach", "--reverse")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    runs = json.loads(cli.run("get", "runs", "-o", "json").stdout)
    assert len(runs) == 48
    assert len({r["id"] for r in runs}) == 48


def test_bad_dates_name_the_argument(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    _register(cli, "hourly-berlin.yaml")
    res = cli.run("cron", "backfill", "hourly-berlin", "--from", "yesterday", "--to", "2026-03-02")
    assert res.returncode == 2
    assert "cron backfill --from: 'yesterday' is not a date" in res.stderr
    res = cli.run("cron", "backfill", "hourly-berlin", "--from", "2026-03-02", "--to", "2026-03-01")
    assert res.returncode == 2
    assert "--to is before --from" in res.stderr


def test_the_backfill_example_reports_each_day(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "backfill.yaml").write_text((REPO / "examples" / "backfill.yaml").read_text())
    assert cli.run("apply", "backfill.yaml").returncode == 0
    args = ["--from", "2026-03-28", "--to", "2026-03-30", "--parallel", "2", "--workers", "2"]
    res = cli.run("cron", "backfill", "backfill-example", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    days = []
    for stamp in ("20260328T013000", "20260329T010000", "20260330T003000"):
        run = cli.get_run(f"backfill-example-cron-{stamp}")
        days.append(tasks_by_id(run)["report"]["outputs"]["day"])
    assert days == ["2026-03-28", "2026-03-29", "2026-03-30"]
