"""deploy/: the alert rules load in promtool, and every runner series the rules and the Grafana
dashboard name exists in the exposition."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runner.metrics import Metrics
from runner.store import open_store

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "runner.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool is not on PATH (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def test_alert_rules_pass_promtool_check_rules() -> None:
    res = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 6 rules found" in res.stdout


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """deploy/prometheus/alerts_test.yaml: each alert fires on made-up series when it should
    (a schedule past twice its period, no leader, a queue waiting, a lost attempt), and not
    for healthy, suspended or new schedules."""
    res = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULES.parent,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _exposed(tmp_path: Path) -> set[str]:
    """Every sample name runner can expose (families without samples count by their type)."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        metrics = Metrics(process=False)
        metrics.add_cluster(store, candidate="me")
        text = metrics.exposition().decode()
    finally:
        store.close()
    return {
        f.name + suffix
        for f in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(f.type, ("",))
    }


def _expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    board = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
    return exprs


def test_every_series_the_rules_and_dashboard_use_is_exposed(tmp_path: Path) -> None:
    exposed = _exposed(tmp_path)
    used = {name for expr in _expressions() for name in re.findall(r"\brunner_[a-z_]+", expr)}
    assert len(used) >= 20
    assert used - exposed == set()


def test_every_exposed_family_is_documented(tmp_path: Path) -> None:
    doc = (DEPLOY.parent / "docs" / "METRICS.md").read_text()
    for name in sorted(_exposed(tmp_path)):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f"`{base}" in doc, f"{base} is not in docs/METRICS.md"
