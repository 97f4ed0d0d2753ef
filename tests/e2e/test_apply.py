"""`runner apply` end to end on the embedded store: exit codes, output, semantics."""

from __future__ import annotations

import datetime
import itertools
import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import Cli, pid_alive, tasks_by_id, wait_for


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


def test_apply_diamond_runs_in_dependency_order(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    order = (cli.cwd / "order.txt").read_text().split()
    assert order[0] == "top"
    assert order[-1] == "bottom"
    assert sorted(order[1:3]) == ["left", "right"]
    run = cli.get_run()
    assert run["state"] == "succeeded"
    assert all(t["state"] == "succeeded" for t in run["tasks"])
    assert "succeeded" in res.stdout  # plain progress lines outside a terminal


def test_apply_matrix_fans_out_then_joins(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("fanout.yaml"), "--workers", "3")
    assert res.returncode == 0, res.stderr
    order = (cli.cwd / "order.txt").read_text().split()
    assert sorted(order[:4]) == ["shard-1", "shard-2", "shard-3", "shard-4"]
    assert order[4:] == ["join"]
    ids = set(tasks_by_id(cli.get_run()))
    assert ids == {"shard[n=1]", "shard[n=2]", "shard[n=3]", "shard[n=4]", "join"}


def test_apply_joins_a_wide_fan_in_once_after_all_its_dependencies(cli: Cli) -> None:
    """40 dependencies: on etcd a wide task (its dependencies' arrivals counted)."""
    res = cli.run("apply", cli.workflow("widejoin.yaml"), "--workers", "4")
    assert res.returncode == 0, res.stderr
    assert (cli.cwd / "joined.txt").read_text().split() == ["40"]
    join = tasks_by_id(cli.get_run())["join"]
    assert (join["state"], len(join["attempts"])) == ("succeeded", 1)


def test_apply_with_prefetch_joins_once_and_exits_by_the_run(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("widejoin.yaml"), "--workers", "4", "--prefetch", "8")
    assert res.returncode == 0, res.stderr
    assert (cli.cwd / "joined.txt").read_text().split() == ["40"]
    run = cli.get_run()
    assert run["state"] == "succeeded"
    assert all(len(t["attempts"]) == 1 for t in run["tasks"])
    failed = cli.run("apply", cli.workflow("cleanup.yaml"), "--workers", "2", "--prefetch", "4")
    assert failed.returncode == 1
    assert tasks_by_id(cli.get_run())["after"]["state"] == "skipped"


def test_apply_with_prefetch_records_when_each_held_task_started(cli: Cli) -> None:
    """One slot holding prefetched tasks runs them one after another: each attempt's
    started_at is when it ran (0.1 s of sleep apart at least), not when it was claimed."""
    (cli.cwd / "naps.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: naps}\nspec:\n  tasks:\n"
        "    - name: nap\n      matrix: {n: [1, 2, 3, 4, 5, 6]}\n      run: sleep 0.1\n"
    )
    res = cli.run("apply", "naps.yaml", "--workers", "1", "--prefetch", "4")
    assert res.returncode == 0, res.stderr
    starts = sorted(t["attempts"][0]["started_at"] for t in cli.get_run()["tasks"])
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(map(_when, starts))]
    assert len(gaps) == 5
    assert min(gaps) >= 0.1, gaps


def _when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_apply_flaky_task_succeeds_on_third_attempt(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("flaky.yaml"), "--workers", "1")
    assert res.returncode == 0, res.stderr
    attempts = tasks_by_id(cli.get_run())["flaky"]["attempts"]
    assert [a["state"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert [a["exit_code"] for a in attempts] == [1, 1, 0]


def test_apply_timeout_kills_the_whole_process_group(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("timeout.yaml"), "--workers", "1")
    assert res.returncode == 1, res.stderr
    task = tasks_by_id(cli.get_run())["hang"]
    assert task["state"] == "failed"
    assert task["attempts"][-1]["reason"] == "timeout"
    child = int((cli.cwd / "child.pid").read_text())
    wait_for(lambda: not pid_alive(child), timeout=15, what="the orphan to die")


def test_apply_failure_skips_dependents_and_runs_always_cleanup(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("cleanup.yaml"), "--workers", "2")
    assert res.returncode == 1
    states = {k: t["state"] for k, t in tasks_by_id(cli.get_run()).items()}
    assert states == {
        "broken": "failed",
        "after": "skipped",
        "cleanup": "succeeded",
        "independent": "succeeded",
    }
    assert not (cli.cwd / "after-ran").exists()
    assert (cli.cwd / "cleanup-ran").exists()
    logs = cli.run("logs", "@latest", "--failed")
    assert "about to fail" in logs.stdout


def test_apply_one_worker_runs_in_priority_order(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("priority.yaml"), "--workers", "1")
    assert res.returncode == 0, res.stderr
    order = [int(x) for x in (cli.cwd / "order.txt").read_text().split()]
    assert len(order) == 12
    assert order == sorted(order, reverse=True)


def test_apply_passes_outputs_downstream(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("outputs.yaml"), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert (cli.cwd / "consumed.txt").read_text().strip() == "42"
    assert tasks_by_id(cli.get_run())["producer"]["outputs"] == {"rows": "42"}


def test_apply_param_full_of_shell_syntax_stays_inert(cli: Cli) -> None:
    value = "$(touch pwned); `touch pwned2`; echo 'a' \"b\" | cat > pwned3 & ${HOME} \\ \n x"
    res = cli.run(
        "apply", cli.workflow("inert.yaml"), "--workers", "1", "--param", f"value={value}"
    )
    assert res.returncode == 0, res.stderr
    assert (cli.cwd / "out.txt").read_text() == value
    assert not any((cli.cwd / name).exists() for name in ("pwned", "pwned2", "pwned3"))


def test_apply_json_output_is_the_run_contract(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "2", "-o", "json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert set(run) >= {"id", "workflow", "state", "params", "created_at", "started_at"}
    assert run["state"] == "succeeded"
    task = run["tasks"][0]
    assert set(task) >= {"id", "name", "state", "waiting_reason", "priority", "outputs"}
    attempt = task["attempts"][0]
    assert set(attempt) >= {"number", "state", "worker", "exit_code", "reason", "started_at"}
    assert attempt["started_at"].endswith("Z")


def test_apply_invalid_workflow_exits_2_and_stores_nothing(cli: Cli) -> None:
    (cli.cwd / "bad.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: bad}\n"
        "spec:\n  tasks:\n    - name: a\n      dependson: [b]\n      run: 'true'\n"
    )
    res = cli.run("apply", "bad.yaml")
    assert res.returncode == 2
    assert "bad.yaml:7:" in res.stderr
    assert "Traceback" not in res.stderr
    listed = cli.run("get", "runs", "-o", "json")
    assert json.loads(listed.stdout) == []


def test_apply_corrupt_store_exits_3(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (cli.cwd / "state.db").write_bytes(b"this is not a database" * 100)
    res = cli.run("apply", cli.workflow("diamond.yaml"))
    assert res.returncode == 3
    assert "state.db" in res.stderr
    assert "Traceback" not in res.stderr


def test_detach_then_worker_finishes_the_run(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--detach")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    assert cli.get_run(run_id)["state"] == "pending"
    done = cli.run("apply", "--resume", run_id, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert cli.get_run(run_id)["state"] == "succeeded"


def test_unknown_run_is_a_clear_error(cli: Cli) -> None:
    res = cli.run("get", "run", "no-such-run")
    assert res.returncode == 2
    assert "no-such-run" in res.stderr
    assert "Traceback" not in res.stderr


def test_get_run_yaml_matches_json(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "2", "--detach")
    assert res.returncode == 0, res.stderr
    as_yaml = cli.run("get", "run", "@latest", "-o", "yaml")
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == cli.get_run()
    table = cli.run("get", "runs")
    assert "diamond" in table.stdout
    assert "pending" in table.stdout


def test_workers_with_prefetch_record_every_result_once(cli: Cli) -> None:
    """With prefetch a worker records results off its slots, several per transaction."""
    ids = []
    for name in ("widejoin.yaml", "cleanup.yaml", "flaky.yaml"):
        res = cli.run("apply", cli.workflow(name), "--detach")
        assert res.returncode == 0, res.stderr
        ids.append(res.stdout.strip())
    workers = [cli.start("worker", "--concurrency", "2", "--prefetch", "4") for _ in range(2)]
    try:
        for run_id in ids:
            done = cli.run("get", "run", run_id, "--watch", "-o", "json", timeout=120)
            assert done.returncode in (0, 1), done.stderr
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=60)
    runs = [cli.get_run(run_id) for run_id in ids]
    assert [r["state"] for r in runs] == ["succeeded", "failed", "succeeded"]
    assert (cli.cwd / "joined.txt").read_text().split() == ["40"]
    assert {k: t["state"] for k, t in tasks_by_id(runs[1]).items()} == {
        "broken": "failed",
        "after": "skipped",
        "cleanup": "succeeded",
        "independent": "succeeded",
    }
    flaky = tasks_by_id(runs[2])["flaky"]["attempts"]
    assert [a["state"] for a in flaky] == ["failed", "failed", "succeeded"]
    for run in runs:
        for task in run["tasks"]:
            assert sum(a["state"] == "running" for a in task["attempts"]) == 0


def test_apply_param_value_is_inert_text(cli: Cli) -> None:
    """`--param 'x=${{ bogus }}'` used to pass apply and fail at run time with a traceback;
    `${{ params.y }}` in a value became y's value. A value is text, wherever it lands."""
    (cli.cwd / "inert-param.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: inert-param}\nspec:\n"
        "  params: {x: '', y: from-y}\n  tasks:\n"
        "    - name: show\n"
        "      run: printf '%s|%s\\n' ${{ params.x }} \"$RUNNER_PARAM_X\" > seen.txt\n"
    )
    for value in ("${{ bogus }}", "${{ params.y }}", "${{ run.id }}"):
        res = cli.run("apply", "inert-param.yaml", "--workers", "1", "--param", f"x={value}")
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        assert (cli.cwd / "seen.txt").read_text() == f"{value}|{value}\n"


def test_apply_of_a_large_run_shows_counts_and_names_its_failures(cli: Cli) -> None:
    """10,101 tasks: the plan is streamed, the progress is counts, not a line per task."""
    values = ", ".join(str(i) for i in range(101))
    (cli.cwd / "large.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: large}\nspec:\n  tasks:\n"
        "    - name: many\n      call: tests.callables:noop\n"
        f"      matrix: {{a: [{values}], b: [{', '.join(str(i) for i in range(100))}]}}\n"
        "    - {name: last, depends: [many], call: tests.callables:fail}\n"
    )
    res = cli.run("apply", "large.yaml", "--workers", "4", timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert lines[0] == f"run {run_id} created"
    counts = lines[1:-1]
    assert counts, res.stdout
    assert all(f" {run_id} " in line and line.endswith(" of 10,101 tasks done") for line in counts)
    assert counts[-1].endswith(f" {run_id} failed: 10,101 of 10,101 tasks done")
    assert lines[-1].startswith(f"run {run_id} failed in ")
    assert lines[-1].endswith(f"; failed: last (see `runner logs {run_id} --failed`)")
    assert not any("many[a=" in line for line in lines)  # no line per task
    run = cli.get_run()
    assert len(run["tasks"]) == 10_101
    states = {t["id"]: t["state"] for t in run["tasks"]}
    assert states["last"] == "failed"
    assert sum(s == "succeeded" for s in states.values()) == 10_100
