"""SQLite rows to models: the column lists the reads select, and JSON columns.

Rows are `sqlite3.Row` (see `db.named`) read by column name, except the rows a run has one of
per task or attempt (`task`, `attempt`): those are unpacked into names in one statement, as
reading them by name slowed `get_run` of large runs measurably (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from runner import interrupts
from runner.models import (
    Attempt,
    AttemptState,
    Reason,
    Run,
    RunState,
    TaskRecord,
    TaskState,
    WorkerInfo,
)

with interrupts.deferred():  # orjson's module init crashes (SIGSEGV) if a Ctrl-C lands in it
    import orjson

RUN_COLS = (
    "id, workflow, state, params, created_at, started_at, finished_at, key, scheduled_time,"
    " plan_hash, tasks_total, tasks_done, reason, cgroup, cgroup_seq"
)
TASK_COLS = (
    "task_id, name, state, priority, remaining_deps, not_before, outputs, losses, ready_at,"
    " selector, locks, depends, gate, allow_failure, json_extract(spec, '$.retries.limit')"
)
ATTEMPT_COLS = (
    "task_id, number, state, worker, token, exit_code, reason, error, started_at, finished_at"
)
# Live workers, `running` counted from ownership, `assigned` from the queue.
WORKER_SELECT = (
    "SELECT w.id, w.name, w.host, w.pid, w.labels, w.weight, w.capacity, w.version,"
    " (SELECT count(*) FROM ownership o WHERE o.worker_id = w.id) AS running, w.heartbeat_at,"
    " w.expires_at, (SELECT count(*) FROM tasks t WHERE t.assigned_to = w.id"
    " AND t.ready_seq IS NOT NULL) AS assigned, w.draining, w.clock_skew FROM workers w"
)


def run(r: sqlite3.Row) -> Run:
    """A Run (without tasks) from a row of RUN_COLS."""
    return Run(
        id=r["id"],
        workflow=r["workflow"],
        state=RunState(r["state"]),
        params=parse(r["params"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        key=r["key"],
        scheduled_time=r["scheduled_time"],
        plan_hash=r["plan_hash"],
        tasks_total=r["tasks_total"],
        tasks_done=r["tasks_done"],
        reason=r["reason"],
        group=r["cgroup"],
    )


# Why a queued task still waits, from its (selector, locks) columns.
QueuedReason = Callable[[str | None, str | None], str]


def task(row: Any, attempts: Mapping[str, list[Attempt]], queued: QueuedReason) -> TaskRecord:
    """A TaskRecord from a row of TASK_COLS, with its attempts (by task id)."""
    (
        task_id,
        name,
        state_value,
        priority,
        remaining,
        not_before,
        outputs,
        losses,
        ready_at,
        selector,
        locks,
        depends,
        gate,
        allow_failure,
        retries,
    ) = row
    state = TaskState(state_value)
    if state is TaskState.READY:
        reason: str | None = queued(selector, locks)
    else:
        reason = waiting_reason(state, remaining, not_before) or _why(gate)
    return TaskRecord(
        id=task_id,
        name=name,
        state=state,
        priority=priority,
        waiting_reason=reason,
        outputs=loads(outputs),
        attempts=tuple(attempts.get(task_id, ())),
        losses=losses,
        ready_at=ready_at,
        allow_failure=bool(allow_failure),
        retries=int(retries or 0),
        depends=tuple(parse(depends)),
    )


def _why(gate: str | None) -> str | None:
    """Why a gated task (if:, forEach) ended without running: runner.store.sqlite.gates."""
    return None if not gate else parse(gate).get("why")


def waiting_reason(state: TaskState, remaining: int, not_before: float) -> str | None:
    """Why a task that is not queued waits (dependencies, backoff), or None."""
    if state is TaskState.PENDING:
        return f"waiting for {remaining} dependenc{'y' if remaining == 1 else 'ies'}"
    if state is TaskState.RETRYING:
        until = datetime.fromtimestamp(not_before, UTC).isoformat(timespec="seconds")
        return f"retry after backoff until {until.replace('+00:00', 'Z')}"
    if state is TaskState.READY:
        return "queued"
    return None


def attempt(row: Any) -> tuple[str, Attempt]:
    """The task id and the Attempt of a row of ATTEMPT_COLS."""
    (task_id, number, state, worker, token, exit_code, reason, error, started_at, finished_at) = row
    return task_id, Attempt(
        number=number,
        state=AttemptState(state),
        worker=worker,
        token=token,
        exit_code=exit_code,
        reason=None if reason is None else Reason(reason),
        error=error,
        started_at=started_at,
        finished_at=finished_at,
    )


def worker(r: sqlite3.Row) -> WorkerInfo:
    """A WorkerInfo from a row of WORKER_SELECT."""
    return WorkerInfo(
        id=r["id"],
        name=r["name"],
        host=r["host"],
        pid=r["pid"],
        labels=json.loads(r["labels"]),
        weight=r["weight"],
        capacity=r["capacity"],
        version=r["version"],
        running=r["running"],
        heartbeat_at=r["heartbeat_at"],
        expires_at=r["expires_at"],
        assigned=r["assigned"],
        draining=bool(r["draining"]),
        clock_skew=r["clock_skew"],
    )


def loads(text: str | None) -> dict[str, str]:
    """A JSON object column (NULL → {})."""
    return {} if text is None else dict(parse(text))


_LONG_NUMBER = re.compile(r"\d{19}")


def parse(text: str) -> Any:
    """A JSON column as `json.loads` reads it, with orjson (faster, and every claim parses a
    spec) where that gives the same value. Not where orjson would not: an integer beyond 64
    bits (orjson makes it a float; any run of 19 digits sends the text to json), NaN or a lone
    surrogate escape (orjson refuses them)."""
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
