"""The one listener: `/metrics` over HTTP, bound to loopback unless the caller allows more.

docs/SECURITY.md: the series name workflows, schedules, workers and locks, so an address
another host can reach is refused unless `allow_remote` says so explicitly.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from runner import errors

logger = logging.getLogger(__name__)


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` -> (host, port). Raises UsageError naming the value."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise errors.UsageError(f"--metrics-addr {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port)


def resolve(host: str, port: int, *, allow_remote: bool) -> tuple[socket.AddressFamily, str]:
    """The address to bind. Raises UsageError for a name that does not resolve, and for an
    address other hosts may reach unless `allow_remote`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise errors.UsageError(f"--metrics-addr {host}:{port}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    if not allow_remote and not all(_loopback(str(info[4][0])) for info in infos):
        raise errors.UsageError(
            f"--metrics-addr {host}:{port} is not a loopback address: any host that reaches it "
            "could read the metrics (workflow, schedule and worker names). Use 127.0.0.1, or "
            "add --metrics-allow-remote to listen there (see docs/SECURITY.md)"
        )
    return family, str(sockaddr[0])


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


class MetricsServer:
    """A daemon HTTP server thread answering `GET /metrics` with the registry's exposition."""

    def __init__(self, registry: CollectorRegistry, addr: str, *, allow_remote: bool) -> None:
        host, port = parse_addr(addr)
        family, address = resolve(host, port, allow_remote=allow_remote)
        handler = _handler(registry)
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family})
        try:
            self.httpd: ThreadingHTTPServer = server_class((address, port), handler)
        except OSError as exc:
            raise errors.ConfigError(f"--metrics-addr {addr}: {exc.strerror}") from None
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def url(self) -> str:
        address, port = self.httpd.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"not found: the metrics are at /metrics\n", "text/plain")
                return
            self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("metrics request: %s", format % args)

    return Handler
