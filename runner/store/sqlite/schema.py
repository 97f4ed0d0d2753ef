"""The SQLite store's schema, connection setup and error mapping (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from runner import errors

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

# The queue is the partial index `tasks_queue`: tasks waiting to be claimed have a `ready_seq`
# (a store-wide sequence number, so FIFO does not depend on wall clocks), everything else has
# NULL there. The claim query walks that index in (priority DESC, ready_seq) order.
DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    key TEXT UNIQUE,
    scheduled_time REAL,
    plan_hash TEXT NOT NULL,
    fail_fast INTEGER NOT NULL,
    parallelism INTEGER,
    timeout REAL,
    deadline REAL,
    tasks_total INTEGER NOT NULL,
    tasks_done INTEGER NOT NULL,
    reason TEXT,
    dispatch TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS runs_deadline ON runs (deadline) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    depends TEXT NOT NULL,
    when_ TEXT NOT NULL,
    allow_failure INTEGER NOT NULL,
    selector TEXT,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    remaining_deps INTEGER NOT NULL,
    losses INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT,
    ready_seq INTEGER,
    ready_at REAL,
    not_before REAL NOT NULL DEFAULT 0,
    locks TEXT,
    assigned_to TEXT,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (priority DESC, ready_seq)
    WHERE ready_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_run_state ON tasks (run_id, state);
CREATE TABLE IF NOT EXISTS deps (
    run_id TEXT NOT NULL,
    dep_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (run_id, dep_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    worker TEXT NOT NULL,
    token INTEGER NOT NULL,
    exit_code INTEGER,
    reason TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (run_id, task_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id, number)
);
CREATE TABLE IF NOT EXISTS ownership (
    token INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    UNIQUE (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS ownership_worker ON ownership (worker_id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    labels TEXT NOT NULL,
    weight INTEGER NOT NULL,
    capacity INTEGER NOT NULL,
    version TEXT NOT NULL,
    running INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0);
"""

# Schedules are rows of `schedules` holding each entry as JSON; the scheduler leadership is the
# single row of `cron_leader` (owner, expiry).
CRON_DDL = """
CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cron_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

# Cache entries of cached tasks (see runner.store.sqlite.cache), one row per cache key.
CACHE_DDL = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    task TEXT NOT NULL,
    run_id TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_created ON cache (created_at);
"""

# Columns added to tables of files created before the cluster features (table, column, decl).
COLUMNS = (
    ("runs", "dispatch", "TEXT"),
    ("tasks", "locks", "TEXT"),
    ("tasks", "assigned_to", "TEXT"),
    ("workers", "draining", "INTEGER NOT NULL DEFAULT 0"),
    ("tasks", "gate", "TEXT"),  # if/forEach: runner.store.sqlite.gates
    ("runs", "aging_every", "REAL"),  # spec.aging: runner.store.sqlite.aging
    ("runs", "aging_by", "INTEGER"),
    # liveness by the observer's clock (runner.store.liveness): the heartbeat counter, and how
    # far the worker found its clock from the others' (NULL: within the bound)
    ("workers", "beats", "INTEGER NOT NULL DEFAULT 0"),
    ("workers", "clock_skew", "REAL"),
    ("runs", "cgroup", "TEXT"),  # concurrency group (runner.store.sqlite.groups)
    ("runs", "cgroup_seq", "INTEGER"),
)

# Assignments, lock holders and the dispatch default (see runner.store.sqlite.cluster).
CLUSTER_DDL = """
CREATE INDEX IF NOT EXISTS tasks_assigned ON tasks (assigned_to, priority DESC, ready_seq)
    WHERE assigned_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS holds (
    name TEXT NOT NULL,
    token INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_token ON holds (token);
CREATE INDEX IF NOT EXISTS runs_aging ON runs (id) WHERE aging_every IS NOT NULL
    AND finished_at IS NULL;
CREATE INDEX IF NOT EXISTS runs_cgroup ON runs (cgroup, cgroup_seq)
    WHERE cgroup IS NOT NULL AND finished_at IS NULL;
CREATE TABLE IF NOT EXISTS dispatch_default (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    owner TEXT NOT NULL,
    strategy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hooks (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    spec TEXT NOT NULL,
    kind TEXT NOT NULL,
    end_ INTEGER NOT NULL DEFAULT 0,
    state TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    due_at REAL,
    token TEXT,
    holder TEXT,
    expires_at REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS hooks_due ON hooks (due_at) WHERE state IN ('due', 'delivering');
"""


def translate(exc: sqlite3.Error, path: str) -> errors.StoreError:
    """A runner error for a sqlite3 exception, with a message naming the file and a remedy."""
    text = str(exc)
    lowered = text.lower()
    if "disk is full" in lowered or "disk i/o error" in lowered:
        return errors.StoreError(
            f"store {path}: the disk is full or the file cannot grow ({text}); nothing of this "
            "change was stored and earlier data is intact. Free some space and try again"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return errors.StoreUnavailable(
            f"store {path}: the file is not a runner store or is corrupt ({text}); "
            "move it away or point --store / RUNNER_STORE at another file"
        )
    if "unable to open" in lowered or "readonly" in lowered or "permission" in lowered:
        return errors.StoreUnavailable(
            f"store {path}: cannot open or write the file ({text}); check that it and its "
            "folder exist and are readable and writable by this user"
        )
    if "locked" in lowered or "busy" in lowered:
        return errors.StoreUnavailable(
            f"store {path}: the database stayed locked for {BUSY_TIMEOUT_MS // 1000} s "
            f"({text}); another process holds it; try again"
        )
    return errors.StoreError(f"store {path}: {text}")


def connect(path: str, *, autocheckpoint: bool = True) -> sqlite3.Connection:
    """Open `path` (creating its folder), set WAL and the pragmas, create or check the schema.
    `autocheckpoint=False`: the caller checkpoints the WAL itself (`checkpoint.Checkpointer`)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.StoreUnavailable(
            f"store {path}: cannot create its folder ({exc}); choose another path"
        ) from exc
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    for attempt in range(3):
        started = time.monotonic()
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if not autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            _ensure_schema(conn, path)
            return conn
        except sqlite3.OperationalError as exc:
            # SQLite answers "locked" at once, without its busy handler, in some races of
            # processes opening a new file together (switching it to WAL): try again.
            quick = time.monotonic() - started < 1.0 and "locked" in str(exc).lower()
            if not quick or attempt == 2:
                conn.close()
                raise translate(exc, path) from exc
            time.sleep(0.05 * (attempt + 1))  # a backoff: let the other opener finish
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, path) from exc
        except errors.StoreError:
            conn.close()
            raise
    raise AssertionError("unreachable")


def _ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise errors.StoreUnavailable(
                f"store {path}: schema version {version} is newer than this runner "
                f"understands ({SCHEMA_VERSION}); upgrade runner or use another store file"
            )
        for statement in _statements(DDL + CRON_DDL + CACHE_DDL):
            conn.execute(statement)
        _add_columns(conn)
        for statement in _statements(CLUSTER_DDL):
            conn.execute(statement)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:  # a Ctrl-C can land after the COMMIT: nothing is left to roll back
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add the cluster columns to a file created before they existed (same schema version:
    they are nullable or defaulted, so older runners keep working on the file)."""
    for table, column, decl in COLUMNS:
        info = conn.cursor()
        info.row_factory = sqlite3.Row
        have = {r["name"] for r in info.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    (value,) = row
    return int(value)


def _statements(script: str) -> list[str]:
    """Split the DDL script (no semicolons inside statements) so it runs inside our transaction;
    `executescript` would commit first."""
    return [s.strip() for s in script.split(";") if s.strip()]
