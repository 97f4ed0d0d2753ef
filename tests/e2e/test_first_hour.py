"""What a new user trips on in the first hour (issue 16), through the real CLI on both stores:
--timeout hands the run back at once, a run no worker will pick up says so, paths resolve next
to the workflow file, matrix ids show whole, progress lines carry the stored times and every
attempt, `logs --attempt`, and read-only commands never create a store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, pid_alive, tasks_by_id, wait_for

HEADER = "apiVersion: runner/v1\nkind: Workflow\n"


def _write(cli: Cli, name: str, body: str) -> str:
    path = cli.cwd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + body)
    return name


@pytest.fixture
def cli(any_store_cli: Cli) -> Cli:
    return any_store_cli


# ---------------------------------------------------------------------- 1. --timeout


def test_timeout_hands_the_run_back_at_once_while_a_task_runs(cli: Cli) -> None:
    wf = _write(
        cli,
        "nap.yaml",
        "metadata: {name: nap}\nspec:\n  tasks:\n"
        "    - name: nap\n      run: echo $$ > nap.pid; exec sleep 60\n",
    )
    began = time.monotonic()
    res = cli.run("apply", wf, "--workers", "1", "--timeout", "2s", timeout=120)
    took = time.monotonic() - began
    assert res.returncode == 4, res.stdout + res.stderr
    assert took < 30, f"apply waited for the 60 s task ({took:.1f}s)"  # not for the task
    run = cli.get_run()
    assert f"`runner apply --resume {run['id']}`" in res.stderr
    assert "went back to the queue" in res.stderr
    assert "goes on in the store" not in res.stderr
    nap = tasks_by_id(run)["nap"]
    assert nap["state"] == "ready"  # back in the queue, for any worker
    assert [a["state"] for a in nap["attempts"]] == ["lost"]
    pid = int((cli.cwd / "nap.pid").read_text())
    wait_for(lambda: not pid_alive(pid), timeout=15, what="the task's process to end")


def test_timeout_without_local_workers_says_the_run_goes_on(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    wf = _write(
        cli, "one.yaml", "metadata: {name: one}\nspec:\n  tasks:\n    - {name: a, run: 'true'}\n"
    )
    res = cli.run("apply", wf, "--workers", "0", "--timeout", "1s")
    assert res.returncode == 4
    assert "it goes on with the store's workers" in res.stderr
    assert "get run" in res.stderr


# ---------------------------------------------------------------------- 2. no live worker


def test_a_run_no_worker_will_pick_up_says_so(cli: Cli) -> None:
    wf = _write(
        cli, "one.yaml", "metadata: {name: one}\nspec:\n  tasks:\n    - {name: a, run: 'true'}\n"
    )
    detached = cli.run("apply", wf, "--detach")
    assert detached.returncode == 0, detached.stderr
    assert "waits: no live worker for a; start one with `runner worker`" in detached.stderr
    table = cli.run("get", "run", "@latest")
    assert "waiting: no live worker" in table.stdout
    assert "`runner worker`" in table.stdout
    assert tasks_by_id(cli.get_run())["a"]["waiting_reason"] == "waiting: no live worker"
    waiting = cli.run("apply", wf, "--workers", "0", "--timeout", "2s")  # etcd's default
    assert waiting.returncode == 4
    assert "waits: no live worker" in waiting.stderr


def test_the_waiting_reason_is_said_again_while_it_lasts(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    wf = _write(
        cli, "one.yaml", "metadata: {name: one}\nspec:\n  tasks:\n    - {name: a, run: 'true'}\n"
    )
    res = cli.run("apply", wf, "--workers", "0", "--timeout", "15s")
    assert res.returncode == 4
    assert res.stderr.count("waits: no live worker for a; start one with `runner worker`") >= 2


def test_a_task_no_live_worker_matches_names_its_selector(cli: Cli) -> None:
    wf = _write(
        cli,
        "gpu.yaml",
        "metadata: {name: gpu}\nspec:\n  tasks:\n"
        "    - {name: train, run: 'true', selector: {gpu: 'true'}}\n",
    )
    res = cli.run("apply", wf, "--workers", "1", "--timeout", "2s")
    assert res.returncode == 4
    assert "no live worker matches gpu=true for train" in res.stderr
    assert "`runner worker --labels gpu=true`" in res.stderr


# ---------------------------------------------------------------------- 4. paths


def test_relative_paths_and_call_modules_resolve_next_to_the_workflow_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path)  # the embedded store: one machine
    folder = cli.cwd / "sub" / "dir"
    _write(
        cli,
        "sub/dir/wf.yaml",
        "metadata: {name: anchored}\nspec:\n  tasks:\n"
        "    - {name: script, run: ./hello.sh}\n"
        "    - {name: inwork, workdir: work, run: pwd > here.txt}\n"
        "    - {name: called, call: 'helpers_next_to_file:greet', with: {who: me}}\n",
    )
    (folder / "hello.sh").write_text("#!/bin/sh\necho hello > hello.txt\n")
    (folder / "hello.sh").chmod(0o755)
    (folder / "work").mkdir()
    (folder / "helpers_next_to_file.py").write_text(
        "import os\n\ndef greet(who):\n    return {'who': who, 'cwd': os.getcwd()}\n"
    )
    (cli.cwd / "elsewhere").mkdir()
    res = cli.run("apply", "sub/dir/wf.yaml", "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (folder / "hello.txt").read_text() == "hello\n"
    assert (folder / "work" / "here.txt").read_text().strip() == str(folder / "work")
    called = tasks_by_id(cli.get_run())["called"]
    assert called["outputs"] == {"who": "me", "cwd": str(folder)}


def test_on_etcd_nothing_is_anchored_to_the_submitting_folder(
    etcd_server: Any, tmp_path: Path
) -> None:
    # A cluster's workers do not have the submitting machine's folders: nothing is anchored.
    url = f"{etcd_server.url}/anchor-{time.monotonic_ns()}/"
    cli = Cli(tmp_path, store=url)
    _write(
        cli,
        "sub/dir/wf.yaml",
        "metadata: {name: unanchored}\nspec:\n  tasks:\n"
        "    - {name: where, run: pwd > where.txt}\n",
    )
    worker_home = tmp_path / "worker-home"
    worker_home.mkdir()
    worker = Cli(worker_home, store=url).start("worker")
    res = cli.run("apply", "sub/dir/wf.yaml", "--timeout", "60s")
    worker.terminate()
    worker.wait(timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (worker_home / "where.txt").read_text().strip() == str(worker_home)
    assert not (tmp_path / "sub" / "dir" / "where.txt").exists()


# ---------------------------------------------------------------------- 5, 7, 8


FLAKY = (
    "metadata: {name: flaky}\nspec:\n  tasks:\n"
    "    - name: extract\n      matrix: {region: [apac]}\n"
    "      retries: {limit: 1, backoff: {delay: 0.1s}}\n"
    "      run: echo try $RUNNER_ATTEMPT; test $RUNNER_ATTEMPT = 2\n"
)


def test_retried_attempts_show_in_progress_logs_and_tables(cli: Cli) -> None:
    wf = _write(cli, "flaky.yaml", FLAKY)
    res = cli.run("apply", wf, "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    run = cli.get_run()
    task = "extract[region=apac]"
    first, second = tasks_by_id(run)[task]["attempts"]
    lines = res.stdout.splitlines()
    # every attempt's end, the retried failure included, at the time the store recorded
    failed = [line for line in lines if f"{task} failed (attempt 1 of 2" in line]
    assert len(failed) == 1, lines
    assert failed[0].endswith(", retrying in 0.1s")
    assert failed[0].startswith(first["finished_at"] + " ")
    # (a running attempt's start is its claim until its end records when it began to run)
    assert any(f"{task} running (attempt 2 of 2)" in line for line in lines)
    ended = [line for line in lines if f"{task} succeeded (attempt 2 of 2)" in line]
    assert len(ended) == 1
    assert ended[0].startswith(second["finished_at"] + " ")
    # the instance id whole in the table (rich markup would eat `[region=apac]`)
    assert task in cli.run("get", "run", "@latest").stdout
    one = cli.run("logs", "@latest", task, "--attempt", "1")
    assert "try 1" in one.stdout
    assert "try 2" not in one.stdout
    every = cli.run("logs", "@latest", task, "--attempt", "all").stdout
    assert re.findall(r"==> .* \(attempt (\d) of 2", every) == ["1", "2"]
    assert every.index("try 1") < every.index("try 2")
    missing = cli.run("logs", "@latest", task, "--attempt", "3")
    assert missing.returncode == 2
    assert "has 2 attempt(s)" in missing.stderr
    assert "no failed tasks" in cli.run("logs", "@latest", "--failed").stdout


def test_matrix_instance_ids_show_in_the_run_table(cli: Cli) -> None:
    res = cli.run("apply", cli.workflow("fanout.yaml"), "--workers", "2")
    assert res.returncode == 0, res.stderr
    table = cli.run("get", "run", "@latest").stdout
    for n in (1, 2, 3, 4):
        assert f"shard[n={n}]" in table


# ---------------------------------------------------------------------- 6. read-only


def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    del cli.env["RUNNER_STORE"]  # the default store, in the current folder
    listings: list[tuple[str, ...]] = [("get", "runs"), ("workers",), ("cron", "list"), ("locks",)]
    for args in listings:
        res = cli.run(*args)
        assert res.returncode == 0, res.stderr
        assert "sqlite:///.runner/state.db" in res.stdout, args
        assert str(tmp_path / ".runner" / "state.db") in res.stdout
        assert "--store URL or RUNNER_STORE" in res.stdout
    assert json.loads(cli.run("get", "runs", "-o", "json").stdout) == []
    about_a_run: list[tuple[str, ...]] = [
        ("get", "run", "@latest"),
        ("logs", "@latest"),
        ("cancel", "x"),
    ]
    for args in about_a_run:
        res = cli.run(*args)
        assert res.returncode == 2, res.stderr
        assert "no store at sqlite:///.runner/state.db" in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / ".runner").exists()


def test_empty_listings_name_the_store(cli: Cli) -> None:
    wf = _write(
        cli, "one.yaml", "metadata: {name: one}\nspec:\n  tasks:\n    - {name: a, run: 'true'}\n"
    )
    assert cli.run("apply", wf, "--workers", "1").returncode == 0
    store = cli.env["RUNNER_STORE"]
    workers = cli.run("workers")
    assert workers.stdout.startswith(f"no live workers in {store}"), workers.stdout
    assert "`runner worker` starts one" in workers.stdout
    none = cli.run("get", "runs", "--workflow", "other")
    assert none.stdout.startswith(f"no runs of workflow other in {store}")
