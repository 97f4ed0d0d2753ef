"""The dashboard as a Starlette application: shared state, error pages, the read gate and
the routes of runner.ui.pages, runner.ui.api and runner.ui.writes."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from runner import errors
from runner.store.base import Store
from runner.ui import api, auth, pages, writes
from runner.ui.state import HERE, Dashboard, UiConfig

_STATUS = {
    errors.RunNotFound: 404,
    errors.TaskNotFound: 404,
    errors.ScheduleNotFound: 404,
    errors.UsageError: 400,
    errors.StoreUnavailable: 503,
}


def _status(exc: errors.RunnerError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)


def _error_handler(dash: Dashboard) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, auth.Refused):
            status, message = 403, f"refused: {exc}"
        else:
            assert isinstance(exc, errors.RunnerError)
            status, message = _status(exc), exc.message
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return dash.render(request, "error.html", status=status, message=message)

    return handle


class ReadGate:
    """Beyond loopback, every page and API call but /login and /static needs the token."""

    def __init__(self, app: ASGIApp, guard: auth.Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        open_path = path.startswith(("/static/", "/login"))
        if scope["type"] == "http" and not open_path and not self.guard.can_read(Request(scope)):
            response: Response = RedirectResponse("/login", status_code=303)
            if path.startswith("/api/"):
                response = JSONResponse({"error": "the token is required"}, status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(store: Store, config: UiConfig) -> Starlette:
    """The dashboard on `store` (which the caller opens and closes)."""
    dash = Dashboard(store, config)
    routes: list[BaseRoute] = [*pages.routes(dash), *api.routes(dash), *writes.routes(dash)]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    handler = _error_handler(dash)
    app = Starlette(
        routes=routes,
        exception_handlers={errors.RunnerError: handler, auth.Refused: handler},
    )
    app.add_middleware(ReadGate, guard=dash.guard)
    return app
