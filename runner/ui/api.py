"""The JSON API under /api/: exactly the documented `-o json` shapes (docs/CLI.md), built by
the same `runner.views` functions as the CLI; a task's log as text, or followed live as
server-sent events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from runner import engine, errors, views
from runner.models import AttemptState, Run
from runner.store.base import Store
from runner.ui.state import Dashboard, bind

KEEPALIVE = 10.0  # seconds between comments on a quiet event stream


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or int(raw) < 1:
        raise errors.UsageError(f"limit={raw!r}: expected a whole number of 1 or more")
    return int(raw)


def api_runs(dash: Dashboard, request: Request) -> Response:
    """`runner get runs [--workflow NAME] [--limit N] -o json`."""
    workflow = request.query_params.get("workflow") or None
    runs = dash.store.list_runs(workflow=workflow, limit=_limit(request))
    return JSONResponse([views.run_json(r, tasks=False) for r in runs])


def api_run(dash: Dashboard, request: Request) -> Response:
    """`runner get run RUN -o json`."""
    run_id = engine.resolve_run_id(dash.store, request.path_params["run_id"])
    return JSONResponse(views.run_json(dash.store.get_run(run_id)))


def api_workers(dash: Dashboard, request: Request) -> Response:
    """`runner workers -o json`."""
    now = time.time()
    return JSONResponse([views.worker_json(w, now=now) for w in dash.store.list_workers(now=now)])


def api_schedules(dash: Dashboard, request: Request) -> Response:
    """`runner cron list -o json`."""
    now = time.time()
    entries = dash.store.list_schedules()
    return JSONResponse([views.entry_json(dash.store, e, now=now) for e in entries])


def api_locks(dash: Dashboard, request: Request) -> Response:
    """`runner locks -o json`."""
    return JSONResponse([views.lock_json(lock) for lock in dash.store.list_locks(now=time.time())])


def _target(dash: Dashboard, request: Request) -> tuple[Run, str, int | None]:
    run = dash.store.get_run(engine.resolve_run_id(dash.store, request.path_params["run_id"]))
    ref = request.query_params.get("task", "")
    task = next((t for t in run.tasks if ref in (t.id, t.name)), None)
    if task is None:
        raise errors.TaskNotFound(run.id, ref)
    raw = request.query_params.get("attempt")
    return run, task.id, int(raw) if raw and raw.isdigit() else None


def api_log(dash: Dashboard, request: Request) -> Response:
    """The stored log of one attempt (the latest by default), as `runner logs RUN TASK`."""
    run, task_id, attempt = _target(dash, request)
    return PlainTextResponse(dash.store.get_log(run.id, task_id, attempt=attempt))


def api_log_stream(dash: Dashboard, request: Request) -> Response:
    """Server-sent events: `append` with each new piece of the attempt's log (the first is
    all of it so far), then `end` with the attempt's state once it has finished."""
    run, task_id, attempt = _target(dash, request)
    events = follow_log(dash.store, run.id, task_id, attempt=attempt)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _attempt_state(store: Store, run_id: str, task_id: str, number: int | None) -> str:
    task = next(t for t in store.get_run(run_id).tasks if t.id == task_id)
    attempts = [a for a in task.attempts if number is None or a.number == number]
    return attempts[-1].state.value if attempts else AttemptState.RUNNING.value


def follow_log(store: Store, run_id: str, task_id: str, *, attempt: int | None) -> Iterator[str]:
    """The events of `api_log_stream`, woken by the store's changes to the run."""
    sent = ""
    while True:
        state = _attempt_state(store, run_id, task_id, attempt)
        text = store.get_log(run_id, task_id, attempt=attempt)  # after the state: final once ended
        if new := views.log_after(sent, text):
            yield _event("append", new)
        sent = text
        if state != AttemptState.RUNNING.value:
            yield _event("end", state)
            return
        if not store.wait(KEEPALIVE, run_id=run_id):
            yield ": keepalive\n\n"


def routes(dash: Dashboard) -> list[BaseRoute]:
    return [
        Route("/api/runs", bind(dash, api_runs)),
        Route("/api/runs/{run_id}", bind(dash, api_run)),
        Route("/api/runs/{run_id}/log", bind(dash, api_log)),
        Route("/api/runs/{run_id}/log/stream", bind(dash, api_log_stream)),
        Route("/api/workers", bind(dash, api_workers)),
        Route("/api/schedules", bind(dash, api_schedules)),
        Route("/api/locks", bind(dash, api_locks)),
    ]
