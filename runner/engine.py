"""Runs as a user sees them: submit a plan, find a run, follow it to its end, its exit code."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from runner import errors
from runner.models import Plan, Run, RunState, TaskState
from runner.store.base import Store

LATEST = "@latest"


def new_run_id(workflow: str, now: float) -> str:
    """`<workflow>-<UTC yyyymmdd-hhmmss>-<6 hex>`: sortable by time, unique without a lock."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{workflow}-{stamp}-{secrets.token_hex(3)}"


def submit(
    store: Store,
    plan: Plan,
    *,
    now: float,
    run_id: str | None = None,
    key: str | None = None,
    scheduled_time: float | None = None,
) -> Run:
    """Store a run of `plan`; once this returns the run survives any crash (G1)."""
    return store.create_run(
        plan,
        run_id=run_id or new_run_id(plan.workflow, now),
        now=now,
        key=key,
        scheduled_time=scheduled_time,
    )


def resolve_run_id(store: Store, ref: str) -> str:
    """A run id, or `@latest` for the newest run. Raises RunNotFound."""
    if ref != LATEST:
        return ref
    runs = store.list_runs(limit=1)
    if not runs:
        raise errors.RunNotFound(ref, "there are no runs yet; `runner apply FILE` starts one")
    return runs[0].id


def exit_code(run: Run) -> int:
    """The exit code of a command that waited for `run` to end."""
    if run.state is RunState.SUCCEEDED:
        return errors.EXIT_OK
    if run.state is RunState.CANCELLED:
        return errors.EXIT_CANCELLED
    return errors.EXIT_RUN_FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A task whose state changed between two looks at a run."""

    task_id: str
    old: TaskState | None
    new: TaskState


def diff(before: Run | None, after: Run) -> list[Change]:
    """The task state changes from `before` to `after`, in plan order."""
    old = {t.id: t.state for t in before.tasks} if before else {}
    return [
        Change(task_id=t.id, old=old.get(t.id), new=t.state)
        for t in after.tasks
        if old.get(t.id) is not t.state
    ]


SUMMARY_READS_PER_TASK_S = 100_000  # a follower reads the run summary at most every tasks/this s


def _summary_gap(store: Store, summary: Run, gap: float) -> float:
    """The least time between a follower's summary reads. etcd counts a run's finished tasks
    to answer (O(run)): a large run's follower reads it less often there (1 s at 100,000
    tasks), so it never loads the store; SQLite reads a stored count."""
    if not store.summary_counts_tasks:
        return gap
    return max(gap, summary.tasks_total / SUMMARY_READS_PER_TASK_S)


class _Tail:
    """When a follower's summary reads may skip the throttle: near the run's end (at most one
    task left, or no more than end in twice `min_gap` at the pace of the last `min_gap` or
    more), reads only wait for what the store needs (`_summary_gap`). The throttle stood
    between the last task's end and the follower's (`runner apply`'s exit)."""

    def __init__(self) -> None:
        self._reads: deque[tuple[float, int]] = deque()  # (when, tasks done), oldest first

    def throttle(self, store: Store, summary: Run, at: float, min_gap: float) -> float:
        """The least time from this summary read, made at `at`, to the next."""
        reads = self._reads
        reads.append((at, summary.tasks_done))
        while len(reads) > 2 and at - reads[1][0] >= min_gap:
            reads.popleft()  # the oldest kept is the newest one at least `min_gap` old
        then, done_then = reads[0]
        pace = (summary.tasks_done - done_then) / (at - then) if at > then else 0.0
        if summary.tasks_total - summary.tasks_done <= max(1.0, 2 * pace * min_gap):
            return _summary_gap(store, summary, 0.0)
        return min_gap


def follow(
    store: Store,
    run_id: str,
    *,
    on_change: Callable[[Run, list[Change]], None] | None = None,
    deadline: float | None = None,
    poll: float = 1.0,
    detail_every: float = 0.2,
    min_gap: float = 0.02,
    tasks: bool = True,
    check: Callable[[], None] | None = None,
    on_summary: Callable[[Run], None] | None = None,
) -> Run:
    """Watch a run until it ends and return it (with its tasks; without them, as soon as its
    summary says it ended, with `tasks=False` and no `on_change`).

    Wakes on store changes (Store.wait; on the run's task records only with `on_change`,
    without it the run's end is what counts), so it neither busy-polls nor lags. Each wake reads
    only the run's summary, at most every `min_gap` seconds (a busy run commits thousands of
    times a second; its follower should not read as often) but at once near the run's end; the
    whole run (every task, for `on_change`) is read at most every `detail_every` seconds and at
    the end, so following a 100,000-task run stays cheap.
    `on_summary` sees each summary read (a large run's progress: its counts, no task read).
    Raises WaitTimeout when the monotonic `deadline` passes first, and whatever `check`
    (called before each look) raises.
    """
    previous: Run | None = None
    last_detail = -detail_every
    last_read = throttle = 0.0
    tail = _Tail()
    while True:
        gap = last_read + throttle - time.monotonic()
        if gap > 0:
            time.sleep(gap)  # a throttle, not synchronisation: the next read sees every change
        last_read = time.monotonic()
        if check is not None:
            check()
        summary = store.get_run(run_id, tasks=False)
        if on_summary is not None:
            on_summary(summary)
        min_gap = _summary_gap(store, summary, min_gap)
        throttle = tail.throttle(store, summary, last_read, min_gap)
        ended = summary.state.terminal and summary.tasks_done >= summary.tasks_total
        if ended and not tasks and on_change is None:
            return summary
        if ended or (on_change is not None and time.monotonic() - last_detail >= detail_every):
            run = store.get_run(run_id)
            last_detail = time.monotonic()
            changes = diff(previous, run)
            if on_change is not None and (changes or previous is None):
                on_change(run, changes)
            previous = run
            if ended:
                return run
        remaining = poll if deadline is None else min(poll, deadline - time.monotonic())
        if remaining <= 0:
            raise errors.WaitTimeout(f"gave up waiting for run {run_id}; it goes on in the store")
        store.wait(remaining, run_id=run_id if on_change is not None else None)
