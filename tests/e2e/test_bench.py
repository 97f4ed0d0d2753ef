"""`runner bench`: the standard workloads on the configured store, as a user runs them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner import benchrun
from runner.store.etcd import EtcdStore
from tests.e2e.helpers import Cli


def test_bench_runs_the_chosen_workloads_on_a_fresh_file_beside_the_store(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    res = cli.run("bench", "--only", "w2", "--repeat", "1", "-o", "json")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert (row["workload"], row["title"]) == ("W2", "W2 chain of 200, hand-off")
    figures = row["figures"]
    assert 0 < figures["handoff_p50_ms"] <= figures["handoff_p95_ms"]
    assert figures["cpu_ms_per_task"] > 0
    store = tmp_path / "state.db"
    assert sorted(p.name for p in store.parent.iterdir() if p.name.startswith("runner-bench")) == []
    assert cli.run("get", "runs", "-o", "json").stdout.strip() == "[]"  # nothing in the store


def test_bench_refuses_an_unknown_workload_with_usage_exit(tmp_path: Path) -> None:
    res = Cli(tmp_path).run("bench", "--only", "W1,W9")
    assert res.returncode == 2
    assert "unknown workload W9; choose from W1,W2,W3,W4,W5,CI,W6" in res.stderr


def test_bench_ci_step_runs_runner_apply_as_a_whole_process_beside_xargs(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path)
    res = cli.run("bench", "--only", "ci", "--repeat", "1", "-o", "json", timeout=120)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["workload"] == "CI"
    figures = row["figures"]
    assert figures["wall_s"] > 0
    assert figures["ratio"] == figures["wall_s"] / figures["xargs_wall_s"]
    assert cli.run("get", "runs", "-o", "json").stdout.strip() == "[]"  # its own file


def test_ci_workflow_is_a_valid_workflow_of_n_true_tasks(tmp_path: Path) -> None:
    from runner import benchscale, workflow

    plan = workflow.load_plan(str(benchscale.ci_workflow(tmp_path, 5)), params={})
    assert [t.id for t in plan.tasks] == [f"t[i={i}]" for i in range(5)]
    assert {t.run for t in plan.tasks} == {"true"}


def test_fresh_url_is_a_new_namespace_of_the_same_store(tmp_path: Path) -> None:
    a = benchrun.fresh_url("sqlite:///.runner/state.db", tmp_path)
    b = benchrun.fresh_url("sqlite", tmp_path)
    assert a != b
    assert a.startswith(f"sqlite:///{tmp_path}/bench-")
    assert a.endswith(".db")
    url = benchrun.fresh_url("etcd://h1:2379,h2:2379", tmp_path)
    assert url.startswith("etcd://h1:2379,h2:2379/runner/bench-")
    assert url.endswith("/")
    url = benchrun.fresh_url("etcds://h:2379/team/?ca=/etc/ca.pem", tmp_path)
    assert url.startswith("etcds://h:2379/team/bench-")
    assert url.endswith("/?ca=/etc/ca.pem")


def test_bench_on_etcd_leaves_nothing_under_the_store_prefix(
    tmp_path: Path, etcd_server: Any
) -> None:
    prefix = f"/bench-e2e-{uuid.uuid4().hex[:8]}/"
    cli = Cli(tmp_path, store=f"{etcd_server.url}{prefix}")
    res = cli.run("bench", "--only", "W2,W5", "--repeat", "1", "-o", "json", timeout=120)
    assert res.returncode == 0, res.stderr
    assert [row["workload"] for row in json.loads(res.stdout)] == ["W2", "W5"]
    store = EtcdStore.from_url(f"{etcd_server.url}{prefix}")
    try:  # W2's finished run and W5's never-run 10,000 tasks were both deleted
        assert store.client.scan(prefix, keys_only=True) == []
    finally:
        store.close()


def test_w6_runs_runner_apply_of_its_workflow_file_on_sqlite(tmp_path: Path) -> None:
    from runner import benchscale, workflow

    plan = workflow.load_plan(str(benchscale.w6_workflow(tmp_path, 3000)))
    assert len(plan.tasks) == 3000
    assert {t.call for t in plan.tasks} == {"runner.benchtask:noop"}
    with pytest.raises(ValueError, match="multiple of 1,000"):
        benchscale.w6_workflow(tmp_path, 1500)
    setup = benchrun.Setup(store="sqlite", folder=tmp_path)
    row = benchscale.w6(setup, 2000)
    assert row.workload == "W6"
    assert row.figures["tasks_per_s"] == 2000 / row.figures["wall_s"]
    assert row.figures["peak_rss_mib"] > 0
