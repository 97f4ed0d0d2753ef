"""The plan's JSON form and its text, dot and mermaid renderings (runner.planview)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner import planview, workflow

ROOT = Path(__file__).resolve().parents[2]


def test_json_round_trips_and_hash_covers_all_but_source() -> None:
    plan = workflow.load_plan(ROOT / "examples" / "etl.yaml")
    data = json.loads(json.dumps(planview.plan_to_json(plan)))
    assert planview.plan_from_json(data) == plan
    assert workflow.plan_hash(plan) == plan.hash
    assert len(plan.hash) == len(hashlib.sha256().hexdigest())


def test_text_shows_levels_priorities_retries_timeouts_and_needs() -> None:
    text = planview.render_text(workflow.load_plan(ROOT / "examples" / "diamond.yaml"))
    lines = text.splitlines()
    assert lines[0].startswith("plan diamond  hash ")
    assert lines[0].endswith("4 tasks in 3 levels")
    assert lines[3] == "level 2:"
    assert lines[4] == "  left  priority 10  retries 1 (backoff 1s x2)  timeout 30s  needs start"
    assert lines[-1].endswith("needs left, right")


def test_dot_and_mermaid_draw_every_edge() -> None:
    plan = workflow.load_plan(ROOT / "examples" / "diamond.yaml")
    dot = planview.render_dot(plan)
    assert '"start" -> "left";' in dot
    assert dot.startswith('digraph "diamond" {')
    mermaid = planview.render_mermaid(plan)
    assert mermaid.count("-->") == 4
    assert mermaid.startswith("flowchart LR")


def test_durations_read_naturally() -> None:
    durations = [planview.duration(s) for s in (None, 0.5, 90, 5400, 86400)]
    assert durations == ["-", "500ms", "1m30s", "1h30m", "1d"]
