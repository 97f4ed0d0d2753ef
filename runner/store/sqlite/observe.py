"""The SQLite store object's liveness observer (runner.store.liveness.Clocks), fed from the
`workers` rows inside its own transactions."""

from __future__ import annotations

import sqlite3

from runner.store import liveness
from runner.store.sqlite import workers


class Clocks(liveness.Clocks):
    """`liveness.Clocks` reading the rows of `workers`; call it under the store's lock."""

    def refresh_from(self, db: sqlite3.Connection, *, now: float, force: bool = False) -> None:
        """Read the worker rows again unless they were read less than REFRESH ago."""
        if force or self.stale():
            self.refresh(workers.beats(db), now=now)
