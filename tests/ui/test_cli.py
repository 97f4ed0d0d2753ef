"""`runner get run --format gantt|mermaid|dot`, the run drawings, and `runner ui`'s refusals."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from pathlib import Path

from runner import rungraph
from runner.models import Attempt, AttemptState, Reason, Run, RunState, TaskRecord, TaskState
from runner.ui import drawing
from tests.e2e.helpers import Cli, wait_for
from tests.ui.conftest import WORKFLOWS, answers, free_port


def _failed_run(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    shutil.copy(WORKFLOWS / "broken.yaml", tmp_path / "broken.yaml")
    assert cli.run("apply", "broken.yaml").returncode == 1
    return cli


def test_get_run_format_dot_and_mermaid_colour_tasks_by_state(tmp_path: Path) -> None:
    cli = _failed_run(tmp_path)
    (tmp_path / "broken.yaml").unlink()  # the edges are stored with the run, not read from it
    dot = cli.run("get", "run", "@latest", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert '"boom" [label="boom\\nfailed", fillcolor="#dc3545"];' in dot.stdout
    assert '"prep" -> "shard[n=1]";' in dot.stdout
    mermaid = cli.run("get", "run", "@latest", "--format", "mermaid")
    assert "classDef failed fill:#dc3545" in mermaid.stdout
    assert mermaid.stdout.count("-->") == 6


def test_get_run_format_gantt_draws_each_attempt(tmp_path: Path) -> None:
    cli = _failed_run(tmp_path)
    res = cli.run("get", "run", "@latest", "--format", "gantt")
    assert res.returncode == 0, res.stderr
    boom = next(line for line in res.stdout.splitlines() if line.startswith("boom"))
    assert "#1" in boom
    assert "✗" in boom
    assert "failed" in boom
    assert res.stdout.count("succeeded") >= 4


def test_ui_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    res = cli.run("ui", "--listen", "0.0.0.0:8080")
    assert res.returncode == 2
    assert "--listen 0.0.0.0:8080" in res.stderr
    assert "RUNNER_UI_TOKEN" in res.stderr
    assert "Traceback" not in res.stderr
    res = cli.run("ui", "--allow-write")
    assert res.returncode == 2
    assert "--allow-write: set RUNNER_UI_TOKEN" in res.stderr
    res = cli.run("ui", "--listen", "8080")
    assert res.returncode == 2
    assert "expected HOST:PORT" in res.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = cli.run("ui", "--listen", f"127.0.0.1:{port}")
    assert res.returncode == 2
    assert f"--listen 127.0.0.1:{port}: cannot listen there" in res.stderr


def _run(n: int, names: int) -> Run:
    tasks = tuple(
        TaskRecord(
            id=f"t{i % names}[i={i}]",
            name=f"t{i % names}",
            priority=0,
            state=TaskState.FAILED if i == 7 else TaskState.SUCCEEDED,
        )
        for i in range(n)
    )
    return Run(id="r", workflow="w", state=RunState.FAILED, tasks=tasks)


def test_layout_groups_a_large_run_by_task_name() -> None:
    run = _run(50, 5)
    deps = {t.id: (("t0[i=0]",) if t.name != "t0" else ()) for t in run.tasks}
    layout = rungraph.layout(run, deps, group_above=20)
    assert layout.grouped
    assert {n.label for n in layout.nodes} == {f"t{k} ×10" for k in range(5)}
    by_name = {n.id: n for n in layout.nodes}
    assert by_name["t2"].state == "failed"
    assert by_name["t2"].counts == {"succeeded": 9, "failed": 1}
    assert sorted(layout.edges) == [("t0", f"t{k}") for k in range(1, 5)]
    assert [n.column for n in layout.nodes] == [0, 1, 1, 1, 1]
    small = rungraph.layout(run, deps, group_above=100)
    assert not small.grouped
    assert len(small.nodes) == 50


def test_serve_ui_serves_the_dashboard_beside_the_scheduler(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    port = free_port()
    serve = cli.start("serve", "--workers", "1", "--ui", "--ui-listen", f"127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}/api/workers"
        wait_for(lambda: answers(url), what="serve --ui")

        def names() -> list[str]:
            with urllib.request.urlopen(url, timeout=10) as res:
                return [w["name"] for w in json.load(res)]

        # the dashboard may answer before serve's worker thread has registered
        wait_for(lambda: names() == ["serve"], what="serve's worker on the dashboard")
    finally:
        serve.terminate()
        assert serve.wait(timeout=60) == 143  # as `runner serve` without --ui: SIGTERM


def test_gantt_rows_show_attempts_then_waiting_reasons() -> None:
    attempt = Attempt(
        number=1,
        state=AttemptState.LOST,
        worker="w1",
        token=1,
        reason=Reason.LOST,
        started_at=100.0,
        finished_at=110.0,
    )
    run = Run(
        id="r",
        workflow="w",
        state=RunState.RUNNING,
        tasks=(
            TaskRecord(id="a", name="a", priority=0, state=TaskState.READY, attempts=(attempt,)),
            TaskRecord(
                id="b",
                name="b",
                priority=0,
                state=TaskState.READY,
                waiting_reason="waiting: mutex m is held",
            ),
        ),
    )
    chart = drawing.gantt(run, now=120.0)
    bars = [b for b in chart.boxes if b.state]
    assert [(b.state, b.title) for b in bars] == [("lost", "a #1 lost (lost) on w1, 10.0s")]
    assert "waiting: mutex m is held" in [b.label for b in chart.boxes if not b.state]
    assert "waiting: mutex m is held" in drawing.gantt_svg(chart)
