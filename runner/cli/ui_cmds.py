"""`runner ui`: the web dashboard (docs/UI.md); also `runner serve --ui`. Loads the `ui`
extra's web libraries only when it runs."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any

from runner import config, errors
from runner.cli import common
from runner.config import Settings
from runner.store import Store

if TYPE_CHECKING:
    from runner import ui

DEFAULT_LISTEN = "127.0.0.1:8080"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="serve the web dashboard (runs, DAGs, logs, workers, schedules, locks)",
        description="A web dashboard of the store: runs, each run's DAG, Gantt chart of "
        "attempts and logs (followed live), workers, schedules and locks, with a JSON API "
        "under /api/ in the -o json shapes. Read-only unless --allow-write; writes need the "
        f"token in {config.ENV_UI_TOKEN}. Needs the ui extra: pip install 'runner[ui]'.",
        epilog="examples:\n  runner ui\n"
        "  runner ui --listen 127.0.0.1:9000 --workflows workflows/\n"
        f"  {config.ENV_UI_TOKEN}=$(openssl rand -hex 16) runner ui --allow-write\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_ui_flags(p)
    p.set_defaults(func=cmd_ui)


def add_ui_flags(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """--listen and --allow-write (for `runner serve --ui`, with --ui-*)."""
    p.add_argument(
        f"--{prefix}listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}); beyond loopback needs "
        f"{config.ENV_UI_TOKEN}",
    )
    p.add_argument(
        f"--{prefix}allow-write",
        action="store_true",
        help="allow cancel, retry, trigger, suspend/resume and drain "
        f"(needs {config.ENV_UI_TOKEN})",
    )


def parse_listen(text: str, *, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise errors.UsageError(f"{flag} {text!r}: expected HOST:PORT, like {DEFAULT_LISTEN}")
    return host, int(port)


def _check_free(host: str, port: int, *, flag: str, listen: str) -> None:
    """UsageError now, rather than the web server's exit once it starts, for an address this
    process cannot listen on (in use, or not this machine's)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise errors.UsageError(
            f"{flag} {listen}: cannot listen there ({exc.strerror}); pick another HOST:PORT"
        ) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def ui_config(
    settings: Settings, *, listen: str, allow_write: bool, flag: str
) -> tuple[ui.UiConfig, str, int]:
    """The dashboard's settings; UsageError for an exposed dashboard without a token."""
    host, port = parse_listen(listen, flag=flag)
    token = settings.ui_token
    if not _loopback(host) and not token:
        raise errors.UsageError(
            f"{flag} {listen}: {host} is not a loopback address, and anyone who can reach it "
            f"could read the store; set {config.ENV_UI_TOKEN} to a secret (then every page "
            "asks for it), or listen on 127.0.0.1"
        )
    if allow_write and not token:
        raise errors.UsageError(
            f"--allow-write: set {config.ENV_UI_TOKEN} to a secret; the dashboard's write "
            "actions need it (see docs/UI.md)"
        )
    _check_free(host, port, flag=flag, listen=listen)
    web = _import_ui()
    cfg = web.UiConfig(
        allow_write=allow_write,
        token=token,
        require_login=not _loopback(host),
    )
    return cfg, host, port


def _import_ui() -> Any:
    try:
        from runner import ui
    except ImportError as exc:
        raise errors.ConfigError(
            f"the dashboard needs the ui extra ({exc.name} is missing): pip install 'runner[ui]'"
        ) from None
    return ui


def make_server(store: Store, cfg: ui.UiConfig, host: str, port: int) -> ui.Server:
    server: ui.Server = _import_ui().Server(store, cfg, host=host, port=port)
    mode = "writes allowed with the token" if cfg.allow_write else "read-only"
    print(f"runner ui: http://{host}:{port}/ ({mode})", file=sys.stderr, flush=True)
    return server


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    cfg, host, port = ui_config(
        settings,
        listen=args.listen,
        allow_write=args.allow_write,
        flag="--listen",
    )
    store = common.open_settings_store(settings)
    try:
        make_server(store, cfg, host, port).run()
    finally:
        store.close()
    return errors.EXIT_OK


def start_for_serve(args: argparse.Namespace, settings: Settings, store: Store) -> ui.Server | None:
    """`runner serve --ui`: the dashboard in a thread beside the scheduler, or None."""
    if not args.ui:
        return None
    cfg, host, port = ui_config(
        settings,
        listen=args.ui_listen,
        allow_write=args.ui_allow_write,
        flag="--ui-listen",
    )
    server = make_server(store, cfg, host, port)
    server.start()
    return server
