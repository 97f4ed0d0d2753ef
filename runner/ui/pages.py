"""The dashboard's HTML pages: runs, one run (DAG, Gantt, tasks, outputs), a task's log,
workers, schedules, locks, login. Each renders the same `runner.views` records the API sends."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from runner import engine, errors, rungraph, views
from runner.models import AttemptState, Run, RunState, TaskRecord, TaskState
from runner.ui import auth, drawing, html
from runner.ui.state import Dashboard, bind, form

RUNS_WINDOW = 1000  # runs the list filters and counts (newest first)
TASKS_SHOWN = 1000  # rows of the run page's task table
SCHEDULE_HISTORY = 100  # runs of a schedule searched for its last success and failure


def _int(request: Request, name: str, default: int) -> int:
    try:
        return max(0, int(request.query_params.get(name, default)))
    except ValueError:
        return default


def _duration(run: Run, now: float) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at if run.finished_at is not None else now
    seconds = end - run.started_at
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def runs_page(dash: Dashboard, request: Request) -> Response:
    q = request.query_params
    workflow, state = q.get("workflow") or None, q.get("state") or None
    page, size = _int(request, "page", 0), dash.config.page_size
    runs = dash.store.list_runs(workflow=workflow, limit=RUNS_WINDOW)
    counts = Counter(r.state.value for r in runs)
    chosen = [r for r in runs if state is None or r.state.value == state]
    shown = chosen[page * size : (page + 1) * size]
    now = time.time()
    rows = [{**views.run_json(r, tasks=False), "duration": _duration(r, now)} for r in shown]
    return dash.render(
        request,
        "runs.html",
        rows=rows,
        counts=counts,
        states=[s.value for s in RunState],
        workflows=sorted({r.workflow for r in runs} | ({workflow} if workflow else set())),
        workflow=workflow or "",
        state=state or "",
        page=page,
        more=len(chosen) > (page + 1) * size,
        window=RUNS_WINDOW,
        total=len(runs),
    )


def _task_rows(run: Run, request: Request) -> tuple[list[dict[str, Any]], int]:
    state, name = request.query_params.get("state"), request.query_params.get("name")
    tasks = [t for t in run.tasks if (not state or t.state.value == state)]
    tasks = [t for t in tasks if not name or t.name == name]
    rows = []
    for t in tasks[:TASKS_SHOWN]:
        row = views.task_json(t)
        row["href"] = drawing.log_href(run.id, t.id)
        last = t.attempts[-1] if t.attempts else None
        row["info"] = t.waiting_reason or (last.error if last and last.error else "") or ""
        rows.append(row)
    return rows, len(tasks)


def run_page(dash: Dashboard, request: Request) -> Response:
    now = time.time()
    run_id = engine.resolve_run_id(dash.store, request.path_params["run_id"])
    run = dash.store.get_run(run_id, now=now)
    graph = drawing.dag(run, rungraph.layout(run, rungraph.dependencies(run)))
    rows, matched = _task_rows(run, request)
    chart = drawing.gantt(run, now=now)
    return dash.render(
        request,
        "run.html",
        run=views.run_json(run, tasks=False),
        duration=_duration(run, now),
        terminal=run.state.terminal,
        graph=graph,
        dag_svg=Markup(drawing.dag_svg(graph)),
        chart=chart,
        gantt_svg=Markup(drawing.gantt_svg(chart)),
        task_rows=Markup(html.task_rows(rows)),
        counts=Counter(t.state.value for t in run.tasks),
        tasks=rows,
        matched=matched,
        task_states=[s.value for s in TaskState],
        filter_state=request.query_params.get("state", ""),
        failed=[r for r in rows if r["state"] == "failed"][:20],
    )


def _find_task(run: Run, ref: str) -> TaskRecord:
    for t in run.tasks:
        if ref in (t.id, t.name):
            return t
    raise errors.TaskNotFound(run.id, ref)


def log_page(dash: Dashboard, request: Request) -> Response:
    run = dash.store.get_run(engine.resolve_run_id(dash.store, request.path_params["run_id"]))
    task = _find_task(run, request.query_params.get("task", ""))
    number = _int(request, "attempt", task.attempts[-1].number if task.attempts else 0)
    attempt = next((a for a in task.attempts if a.number == number), None)
    text = dash.store.get_log(run.id, task.id, attempt=number) if attempt else ""
    live = attempt is not None and attempt.state is AttemptState.RUNNING
    lines = text.splitlines()
    tail = len(lines) if live or request.query_params.get("all") else dash.config.log_tail
    return dash.render(
        request,
        "log.html",
        run=views.run_json(run, tasks=False),
        task=views.task_json(task),
        attempt=views.attempt_json(attempt) if attempt else None,
        live=live,
        text="\n".join(lines[-tail:]) if tail else "",
        hidden=max(0, len(lines) - tail),
        attempts=[
            (a.number, a.state.value, drawing.log_href(run.id, task.id, a.number))
            for a in task.attempts
        ],
        stream=f"/api/runs/{quote(run.id, safe='')}/log/stream?"
        + urlencode({"task": task.id, "attempt": number}),
    )


def workers_page(dash: Dashboard, request: Request) -> Response:
    now = time.time()
    rows = [views.worker_json(w, now=now) for w in dash.store.list_workers(now=now)]
    return dash.render(request, "workers.html", rows=rows)


def _last_outcomes(dash: Dashboard, workflow: str) -> dict[str, str | None]:
    """The newest succeeded and failed run of the schedule's workflow among its latest runs."""
    runs = dash.store.list_runs(workflow=workflow, limit=SCHEDULE_HISTORY)
    found: dict[str, str | None] = {"last_success": None, "last_failure": None}
    for key, state in (("last_success", RunState.SUCCEEDED), ("last_failure", RunState.FAILED)):
        found[key] = next((r.id for r in runs if r.state is state), None)
    return found


def schedules_page(dash: Dashboard, request: Request) -> Response:
    now = time.time()
    rows = [
        {**views.entry_json(dash.store, e, now=now), **_last_outcomes(dash, e.name)}
        for e in dash.store.list_schedules()
    ]
    return dash.render(request, "schedules.html", rows=rows)


def locks_page(dash: Dashboard, request: Request) -> Response:
    rows = [views.lock_json(lock) for lock in dash.store.list_locks(now=time.time())]
    return dash.render(request, "locks.html", rows=rows)


def login_page(dash: Dashboard, request: Request) -> Response:
    return dash.render(request, "login.html", error="", has_token=dash.guard.token is not None)


async def login_post(dash: Dashboard, request: Request) -> Response:
    fields = await form(request)
    session = dash.guard.login(str(fields.get("token", "")))
    if session is None:
        return dash.render(
            request,
            "login.html",
            status=403,
            error="wrong token",
            has_token=dash.guard.token is not None,
        )
    target = fields.get("next", "")
    if not target.startswith("/") or target.startswith("//"):
        target = "/runs"  # only this dashboard's own pages: no open redirect
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, session.id, httponly=True, samesite="strict")
    return response


async def logout_post(dash: Dashboard, request: Request) -> Response:
    dash.guard.logout(request)
    response = RedirectResponse("/runs", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


def routes(dash: Dashboard) -> list[BaseRoute]:
    return [
        Route("/", lambda request: RedirectResponse("/runs")),
        Route("/runs", bind(dash, runs_page)),
        Route("/runs/{run_id}", bind(dash, run_page)),
        Route("/runs/{run_id}/log", bind(dash, log_page)),
        Route("/workers", bind(dash, workers_page)),
        Route("/schedules", bind(dash, schedules_page)),
        Route("/locks", bind(dash, locks_page)),
        Route("/login", bind(dash, login_page)),
        Route("/login", bind(dash, login_post), methods=["POST"]),
        Route("/logout", bind(dash, logout_post), methods=["POST"]),
    ]
