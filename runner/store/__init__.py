"""Open a store by URL; backends are imported lazily so SQLite users never load etcd.

URLs:
  sqlite:///relative/path.db     (relative to the current directory)
  sqlite:////absolute/path.db
  etcd://host:port[,host:port...][/prefix]   (prefix defaults to /runner/)
  etcds://...?ca=FILE&cert=FILE&key=FILE     (TLS; credentials from RUNNER_ETCD_USER/_PASSWORD)
  etcd://...?compact=off                     (never compact etcd's history while claiming)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from runner import errors, interrupts, private
from runner.failpoints import Failpoints
from runner.store.base import Store

__all__ = ["Store", "open_store"]


def open_store(
    url: str,
    *,
    log_limit: int = 1024 * 1024,
    failpoints: str = "",
    etcd_user: str | None = None,
    etcd_password: str | None = None,
) -> Store:
    """Open the store at `url`. Raises ConfigError for a malformed URL, StoreUnavailable when
    it cannot be reached or opened."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if "@" in parts.netloc:
        raise errors.ConfigError(
            f"store URL {scheme}://***@{parts.netloc.rpartition('@')[2]}: credentials do not"
            " belong in the URL (process listings and logs show it); use RUNNER_ETCD_USER and"
            " RUNNER_ETCD_PASSWORD or RUNNER_ETCD_PASSWORD_FILE"
        )
    fp = Failpoints(failpoints)
    if scheme == "sqlite":
        with interrupts.deferred():  # extension modules' inits may drop or crash on a Ctrl-C
            import runner.store.sqlite as sqlite

        path = sqlite_path(url)
        _create_private(path)
        return sqlite.SqliteStore(path, log_limit=log_limit, failpoints=fp)
    if scheme in ("etcd", "etcds"):
        with interrupts.deferred():  # grpc's cython init, as above
            import runner.store.etcd as etcd

        return etcd.EtcdStore.from_url(
            url, log_limit=log_limit, failpoints=fp, user=etcd_user, password=etcd_password
        )
    raise errors.ConfigError(
        f"store URL {url!r}: unknown scheme {scheme!r}; use sqlite:///PATH or etcd://HOST:PORT"
    )


def _create_private(path: str) -> None:
    """Create the database file and its folders owner-only before SQLite opens it (SQLite gives
    its -wal and -shm files the database file's mode); an existing file keeps its mode."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        private.make_file(path)
    except OSError as exc:
        raise errors.StoreUnavailable(
            f"store {path}: cannot create it ({exc}); choose another path"
        ) from exc


def sqlite_path(url: str) -> str:
    """The file path of a sqlite:/// URL."""
    if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
        raise errors.ConfigError(f"store URL {url!r}: expected sqlite:///PATH")
    return url[len("sqlite:///") :]
