"""With `--allow-write`: cancel and retry runs, trigger, suspend and resume schedules, drain
workers, through the same `runner.actions` calls as the CLI. A browser posts a form (session
+ CSRF, runner.ui.auth); a script posts to /api/... with `Authorization: Bearer TOKEN`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from runner import actions, views
from runner.store.base import Store
from runner.ui.state import Dashboard, form

Result = tuple[str, Any]  # what happened (for the page), the JSON the API returns


def _cancel(store: Store, target: str, now: float) -> Result:
    run = actions.cancel_run(store, target, now=now)
    return f"run {run.id} {run.state.value}", views.run_json(run, tasks=False)


def _retry(store: Store, target: str, now: float) -> Result:
    tasks = actions.retry_run(store, target, now=now)
    return f"{target}: re-running {len(tasks)} task(s)", {"run": target, "tasks": tasks}


def _trigger(store: Store, target: str, now: float) -> Result:
    run = actions.trigger_schedule(store, target, now=now)
    return f"schedule {target} triggered: run {run.id}", views.run_json(run, tasks=False)


def _suspend(store: Store, target: str, now: float) -> Result:
    entry = actions.suspend_schedule(store, target, suspended=True, now=now)
    return f"schedule {target} suspended", views.entry_json(store, entry, now=now)


def _resume(store: Store, target: str, now: float) -> Result:
    entry = actions.suspend_schedule(store, target, suspended=False, now=now)
    return f"schedule {target} resumed", views.entry_json(store, entry, now=now)


def _drain(store: Store, target: str, now: float) -> Result:
    ids = actions.drain_worker(store, target, now=now)
    return f"worker(s) {', '.join(ids)} draining", {"workers": ids}


ACTIONS: dict[tuple[str, str], Callable[[Store, str, float], Result]] = {
    ("runs", "cancel"): _cancel,
    ("runs", "retry"): _retry,
    ("schedules", "trigger"): _trigger,
    ("schedules", "suspend"): _suspend,
    ("schedules", "resume"): _resume,
    ("workers", "drain"): _drain,
}


def _back(group: str, target: str) -> str:
    return f"/runs/{quote(target, safe='')}" if group == "runs" else f"/{group}"


def _form_action(dash: Dashboard, group: str, verb: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        fields = await form(request)
        dash.guard.check_form_write(request, str(fields.get("csrf", "")))
        target = request.path_params["target"]
        action = ACTIONS[group, verb]
        message, _ = await run_in_threadpool(action, dash.store, target, time.time())
        url = f"{_back(group, target)}?msg={quote(message)}"
        return RedirectResponse(url, status_code=303)

    return endpoint


def _api_action(dash: Dashboard, group: str, verb: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        dash.guard.check_api_write(request)
        action = ACTIONS[group, verb]
        target = request.path_params["target"]
        _, data = await run_in_threadpool(action, dash.store, target, time.time())
        return JSONResponse(data)

    return endpoint


def routes(dash: Dashboard) -> list[BaseRoute]:
    """The write routes; none without --allow-write (a POST then answers 405)."""
    if not dash.config.allow_write:
        return []
    out: list[BaseRoute] = []
    for group, verb in ACTIONS:
        path = f"/{group}/{{target}}/{verb}"
        out.append(Route(path, _form_action(dash, group, verb), methods=["POST"]))
        out.append(Route(f"/api{path}", _api_action(dash, group, verb), methods=["POST"]))
    return out
