"""The dashboard's guard over real HTTP: reads behind the token beyond loopback, the login
session, the CSRF value and the origin check of every browser write."""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import engine
from runner.models import WorkerInfo
from runner.store import Store, open_store
from runner.ui import Server, UiConfig
from tests.contract.plans import diamond
from tests.e2e.helpers import wait_for
from tests.ui.conftest import answers, free_port

TOKEN = "t0ken-for-tests"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield s
    finally:
        s.close()


def _serve(store: Store, config: UiConfig) -> Iterator[str]:
    port = free_port()
    server = Server(store, config, host="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/login"), what="the dashboard")
        yield url
    finally:
        server.stop()


@pytest.fixture
def exposed(store: Store) -> Iterator[str]:
    """A dashboard as it runs beyond loopback: every read needs the token."""
    yield from _serve(store, UiConfig(token=TOKEN, require_login=True))


@pytest.fixture
def writable(store: Store) -> Iterator[str]:
    yield from _serve(store, UiConfig(token=TOKEN, allow_write=True))


def _status(opener: urllib.request.OpenerDirector, request: urllib.request.Request | str) -> int:
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_reads_need_the_token_beyond_loopback(exposed: str) -> None:
    plain = urllib.request.build_opener(_NoRedirect)
    assert _status(plain, f"{exposed}/api/runs") == 401
    assert _status(plain, f"{exposed}/runs") == 303  # to /login
    assert _status(plain, f"{exposed}/static/app.css") == 200
    bearer = urllib.request.Request(
        f"{exposed}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert _status(plain, bearer) == 200
    wrong = urllib.request.Request(f"{exposed}/api/runs", headers={"Authorization": "Bearer nope"})
    assert _status(plain, wrong) == 401


def _login(url: str) -> urllib.request.OpenerDirector:
    """A browser-like client (it keeps cookies), logged in."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    body = urllib.parse.urlencode({"token": TOKEN}).encode()
    assert _status(opener, urllib.request.Request(f"{url}/login", data=body)) == 200
    return opener


def _form(url: str, fields: dict[str, str], **headers: str) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=urllib.parse.urlencode(fields).encode(), headers=headers
    )


def test_browser_writes_need_the_session_its_csrf_value_and_this_origin(
    writable: str, store: Store
) -> None:
    run = engine.submit(store, diamond(), now=time.time())
    cancel = f"{writable}/runs/{run.id}/cancel"
    anonymous = urllib.request.build_opener()
    assert _status(anonymous, _form(cancel, {"csrf": "x"})) == 403
    opener = _login(writable)
    with opener.open(f"{writable}/runs/{run.id}", timeout=10) as response:
        page = response.read().decode()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    csrf = match.group(1)
    assert _status(opener, _form(cancel, {"csrf": "forged"})) == 403
    assert _status(opener, _form(cancel, {"csrf": csrf}, Origin="http://evil.example")) == 403
    assert store.get_run(run.id).state.value == "pending"
    assert _status(opener, _form(cancel, {"csrf": csrf}, Origin=writable)) == 200
    assert store.get_run(run.id).state.value == "cancelled"


def test_wrong_token_does_not_log_in(writable: str) -> None:
    opener = urllib.request.build_opener()
    body = urllib.parse.urlencode({"token": "guess"}).encode()
    assert _status(opener, urllib.request.Request(f"{writable}/login", data=body)) == 403


def test_api_drain_marks_the_worker_draining(writable: str, store: Store) -> None:
    store.register_worker(WorkerInfo(id="w-1", name="w"), now=time.time(), ttl=600)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    drain = urllib.request.Request(f"{writable}/api/workers/w/drain", data=b"", headers=bearer)
    with urllib.request.urlopen(drain, timeout=10) as response:
        assert json.load(response) == {"workers": ["w-1"]}
    assert [w.draining for w in store.list_workers(now=time.time())] == [True]
    missing = urllib.request.Request(
        f"{writable}/api/workers/nobody/drain", data=b"", headers=bearer
    )
    assert _status(urllib.request.build_opener(), missing) == 400
