"""A local HTTP receiver for hook tests: http.server on 127.0.0.1 in a thread, recording every
POST; it answers `fail` statuses first (e.g. [500, 500]) and 200 after."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    url: str = ""
    fail: list[int] = field(default_factory=list)
    posts: list[Received] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def count(self) -> int:
        with self.lock:
            return len(self.posts)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(size) or b"{}")
            with receiver.lock:
                receiver.posts.append(Received(dict(self.headers.items()), body))
                status = receiver.fail.pop(0) if receiver.fail else 200
                receiver.lock.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no" if status >= 400 else b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiver(*, fail: list[int] | None = None) -> Iterator[Receiver]:
    got = Receiver(fail=list(fail or []))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(got))
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
