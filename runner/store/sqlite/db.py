"""One store object's connection: its lock, its transactions and the commits they saw.

Shaped like huey's SqliteStorage: one connection per store object guarded by a lock (the threads
of a process share the object) and one `BEGIN IMMEDIATE` transaction per store method, so each
method is atomic across processes. Writers first queue on the file's flock (`WriterLock`); WAL
checkpoints run off the commit path (`Checkpointer`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from runner import errors, interrupts
from runner.store.sqlite.checkpoint import Checkpointer, WriterLock
from runner.store.sqlite.schema import BUSY_TIMEOUT_MS, connect, translate

Seen = tuple[int, int]  # (commits through this object, the connection's PRAGMA data_version)


@dataclass(slots=True)
class Committed:
    """What a transaction left: `changed` when it wrote or saw another connection's commit."""

    changed: bool = False


class Database:
    """The connection of one store object and the locks around it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()  # held for every transaction
        self.cond = threading.Condition(threading.Lock())  # waiters of `wait`
        self.commits = 0  # transactions that wrote something, through this object
        self.version = 0  # the connection's PRAGMA data_version, last read
        self._local = threading.local()  # per thread: the Seen of its last transaction
        self._conn: sqlite3.Connection | None = connect(path, autocheckpoint=False)
        self._checkpointer = Checkpointer(path)  # with the automatic checkpoint off
        self._writer = WriterLock(path, timeout=BUSY_TIMEOUT_MS / 1000)

    @property
    def closed(self) -> bool:
        return self._conn is None

    @contextmanager
    def tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the object's lock; sqlite3 errors become StoreError. A Ctrl-C
        in the main thread waits for its end (an exception raised in `contextmanager`'s
        `__enter__` or `__exit__` would leave the lock held: `runner.interrupts`)."""
        with interrupts.deferred():
            with self.lock, self.open(write=write) as (conn, done):
                yield conn
            if done.changed:
                self.notify()

    @contextmanager
    def open(self, *, write: bool) -> Iterator[tuple[sqlite3.Connection, Committed]]:
        """A transaction; the caller holds `lock` (and notifies waiters after releasing it
        when `changed`: `wait` takes the locks in the other order)."""
        done = Committed()
        with self._writer.held(write):
            conn = self.connection()
            before = conn.total_changes
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn, done
                (version,) = conn.execute("PRAGMA data_version").fetchone()
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise translate(exc, self.path) from exc
            except BaseException:
                _rollback(conn)
                raise
            wrote = conn.total_changes != before
            done.changed = wrote or version != self.version
            self.commits += int(wrote)
            if wrote:
                self._checkpointer.wrote()
            self.version = version
            self._local.seen = (self.commits, version)

    def notify(self) -> None:
        """Wake the threads waiting for a change."""
        with interrupts.deferred(), self.cond:
            self.cond.notify_all()

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise errors.StoreError(f"store {self.path}: used after close()")
        return self._conn

    def last_seen(self) -> Seen | None:
        """What the calling thread saw at its last transaction or wait, if any."""
        seen: Seen | None = getattr(self._local, "seen", None)
        return seen

    def mark_seen(self) -> None:
        """The calling thread has seen the current state."""
        self._local.seen = (self.commits, self.version)

    def refresh(self) -> Seen:
        """Read `PRAGMA data_version` (it changes when another connection commits); the
        current (commits through this object, data_version)."""
        with self.lock:
            try:
                (version,) = self.connection().execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
            self.version = int(version)
            return self.commits, self.version

    def close(self) -> bool:
        """Close the connection; False when it was closed already."""
        self._checkpointer.close()
        with self.lock:
            if self._conn is None:
                return False
            self._conn.close()
            self._conn = None
            self._writer.close()
            return True


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def named(conn: sqlite3.Connection, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
    """Execute `sql` on a cursor whose rows are `sqlite3.Row`, read by column name (off the
    hot paths: claim and finish unpack their SELECT lists into names instead)."""
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute(sql, args)
