"""The embedded store: one SQLite file shared by the processes of one host (see
docs/ARCHITECTURE.md, "SQLite data model")."""

from runner.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
