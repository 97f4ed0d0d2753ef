"""What every dashboard handler shares: the store, the settings, the guard and the templates."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from runner.store.base import Store
from runner.ui import auth

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True, kw_only=True)
class UiConfig:
    allow_write: bool = False
    token: str | None = None
    require_login: bool = False  # reads need the token too (listening beyond loopback)
    page_size: int = 50
    log_tail: int = 200  # lines of a finished attempt's log shown at first


class Dashboard:
    """What every handler shares: the store, the settings, the guard and the templates."""

    def __init__(self, store: Store, config: UiConfig) -> None:
        self.store = store
        self.config = config
        self.guard = auth.Guard(
            config.token, allow_write=config.allow_write, require_login=config.require_login
        )
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(
        self, request: Request, name: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self.guard.session(request)
        html = self.templates.get_template(name).render(
            allow_write=self.config.allow_write,
            logged_in=session is not None,
            csrf=session.csrf if session else "",
            msg=request.query_params.get("msg", ""),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)


Handler = Callable[[Dashboard, Request], Any]


def bind(dash: Dashboard, func: Handler) -> Callable[[Request], Any]:
    """A Starlette endpoint calling `func(dash, request)`: a sync handler runs in Starlette's
    thread pool (the store is synchronous), an async one (form posts) on the event loop."""
    if inspect.iscoroutinefunction(func):

        async def async_endpoint(request: Request) -> Response:
            response: Response = await func(dash, request)
            return response

        return async_endpoint

    def endpoint(request: Request) -> Response:
        response: Response = func(dash, request)
        return response

    return endpoint


async def form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form post (the dashboard's forms are all small and flat;
    parsed here so the extra needs no multipart library)."""
    body = await request.body()
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
