"""Who may do what: the token, login sessions and the CSRF check of every write.

Writes (cancel, retry, trigger, suspend/resume, drain) exist only with `--allow-write`, and
each needs the token (RUNNER_UI_TOKEN): a script sends `Authorization: Bearer TOKEN`; a
browser logs in once at /login and then sends its session cookie (HttpOnly, SameSite=Strict)
with the form's CSRF value, which only pages of this server carry. Reads need the token too
when the dashboard listens beyond loopback.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from starlette.requests import Request

SESSION_COOKIE = "runner_ui_session"
MAX_SESSIONS = 1000


class Refused(Exception):
    """The request lacks the token, its session or its CSRF value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    id: str
    csrf: str


class Guard:
    """The token check and the in-memory sessions of one dashboard process."""

    def __init__(self, token: str | None, *, allow_write: bool, require_login: bool) -> None:
        self.token = token
        self.allow_write = allow_write
        self.require_login = require_login
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def login(self, given: str) -> Session | None:
        """A new session when `given` is the token, else None."""
        if not self.token_matches(given):
            return None
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        with self._lock:
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session.id] = session
        return session

    def logout(self, request: Request) -> None:
        with self._lock:
            self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def session(self, request: Request) -> Session | None:
        with self._lock:
            return self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))

    def bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def can_read(self, request: Request) -> bool:
        return not self.require_login or self.bearer(request) or self.session(request) is not None

    def check_form_write(self, request: Request, csrf: str) -> None:
        """A browser's write: a live session, its CSRF value, and no foreign Origin."""
        session = self.session(request)
        if session is None:
            raise Refused("log in with the dashboard's token (RUNNER_UI_TOKEN) first")
        if not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
            raise Refused("the form's CSRF value does not match your session; reload the page")
        _same_origin(request)

    def check_api_write(self, request: Request) -> None:
        """A script's write: `Authorization: Bearer TOKEN`."""
        if not self.bearer(request):
            raise Refused("send the dashboard's token: Authorization: Bearer $RUNNER_UI_TOKEN")


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return  # SameSite=Strict already kept the cookie off cross-site requests
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise Refused(f"a write from {origin} is not allowed here")
