"""The web dashboard (`runner ui`, `runner serve --ui`; docs/UI.md): server-rendered pages and
a JSON API over any store. Needs the `ui` extra: the web libraries are imported only here."""

from __future__ import annotations

import threading

import uvicorn

from runner.store.base import Store
from runner.ui.app import create_app
from runner.ui.state import UiConfig

__all__ = ["Server", "UiConfig", "create_app"]


class Server:
    """The dashboard served by uvicorn on `host:port`: `run()` in the main thread (it handles
    Ctrl-C and SIGTERM), or `start()` in a thread and `stop()` it."""

    def __init__(self, store: Store, config: UiConfig, *, host: str, port: int) -> None:
        self.config = config
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(store, config),
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self._server.run()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
