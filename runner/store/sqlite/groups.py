"""Concurrency groups on the SQLite store (`spec.concurrency`), inside the caller's transaction.

A run of a group records the group and its place in line (`runs.cgroup`, `runs.cgroup_seq`,
from the store-wide sequence). Its tasks are claimable only while no unfinished run of the
group is ahead of it in line, so at most one run of a group runs at a time, the next one
starts when it ends (succeeded, failed, cancelled, timed out) or is deleted, and a retried run
goes to the back of the line. See docs/CI.md.
"""

from __future__ import annotations

import sqlite3

from runner.store.sqlite import flow

AHEAD = (
    "SELECT 1 FROM runs INDEXED BY runs_cgroup WHERE cgroup = ? AND finished_at IS NULL"
    " AND cgroup_seq < ? LIMIT 1"
)


def unfinished(db: sqlite3.Connection, group: str) -> list[str]:
    """The unfinished runs of the group, first in line first."""
    return [
        r
        for (r,) in db.execute(
            "SELECT id FROM runs INDEXED BY runs_cgroup WHERE cgroup = ? AND finished_at IS NULL"
            " ORDER BY cgroup_seq",
            (group,),
        )
    ]


def join(db: sqlite3.Connection, run_id: str, group: str) -> None:
    """Put the run at the back of the group's line (on creation and on retry)."""
    db.execute(
        "UPDATE runs SET cgroup = ?, cgroup_seq = ? WHERE id = ?",
        (group, flow.next_seq(db), run_id),
    )


def rejoin(db: sqlite3.Connection, run_id: str) -> None:
    """A retried run of a group goes to the back of its line."""
    row = db.execute("SELECT cgroup FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is not None and row[0] is not None:
        join(db, run_id, row[0])


def blocked(db: sqlite3.Connection, group: str | None, seq: int | None) -> bool:
    """Whether an unfinished run of `group` is ahead of the place `seq` in its line."""
    if group is None:
        return False
    return db.execute(AHEAD, (group, seq)).fetchone() is not None


def waiting_reason(db: sqlite3.Connection, group: str | None, seq: int | None) -> str | None:
    """`queued: group G` while the run waits for its group, else None."""
    return f"queued: group {group}" if blocked(db, group, seq) else None
