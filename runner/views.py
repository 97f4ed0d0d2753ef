"""The documented `-o json` shapes (docs/CLI.md): one function per record, shared by the CLI
and the web dashboard's JSON API, so scripts and pages read one contract."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Any

from runner.models import Attempt, CronEntry, HookStatus, LockInfo, Run, TaskRecord, WorkerInfo
from runner.store.base import Store


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (`2026-01-01T02:00:00.123Z`), None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "state": a.state.value,
        "worker": a.worker,
        "exit_code": a.exit_code,
        "reason": a.reason.value if a.reason else None,
        "error": a.error,
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
    }


def task_json(t: TaskRecord) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "state": t.state.value,
        "waiting_reason": t.waiting_reason,
        "priority": t.priority,
        "outputs": dict(t.outputs),
        "cached": t.cached,
        "attempts": [attempt_json(a) for a in t.attempts],
    }


def run_json(run: Run, *, tasks: bool = True) -> dict[str, Any]:
    """The `runner get run ID -o json` contract (docs/CLI.md); without `tasks`, one item of
    `runner get runs -o json`."""
    out: dict[str, Any] = {
        "id": run.id,
        "workflow": run.workflow,
        "state": run.state.value,
        "params": run.params,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "scheduled_time": iso(run.scheduled_time),
        "reason": run.reason,
        "tasks_total": run.tasks_total,
        "tasks_done": run.tasks_done,
        "group": run.group,
        "waiting_reason": run.waiting_reason,
    }
    if tasks:
        out["tasks"] = [task_json(t) for t in run.tasks]
        out["hooks"] = [hook_json(h) for h in run.hooks]
    return out


def hook_json(h: HookStatus) -> dict[str, Any]:
    """One recorded hook delivery of `get run -o json` (docs/HOOKS.md)."""
    return {
        "index": h.index,
        "on": list(h.on),
        "kind": h.kind,
        "state": h.state.value,
        "attempts": h.attempts,
        "last_error": h.last_error,
    }


def worker_json(w: WorkerInfo, *, now: float) -> dict[str, Any]:
    """`runner workers -o json`: one live worker."""
    return {
        "id": w.id,
        "name": w.name,
        "host": w.host,
        "pid": w.pid,
        "labels": dict(w.labels),
        "weight": w.weight,
        "capacity": w.capacity,
        "running": w.running,
        "assigned": w.assigned,
        "draining": w.draining,
        "load": round(w.running / w.capacity, 3) if w.capacity else None,
        "version": w.version,
        "heartbeat_at": iso(w.heartbeat_at),
        "heartbeat_age": round(max(0.0, now - w.heartbeat_at), 3),
        "expires_at": iso(w.expires_at),
        # seconds its clock is off the other workers' beyond the bound, else null
        "clock_skew": None if w.clock_skew is None else round(w.clock_skew, 1),
    }


def lock_json(lock: LockInfo) -> dict[str, Any]:
    """`runner locks -o json`: one lock."""
    kind, _, name = lock.name.partition(":")
    return {
        "lock": lock.name,
        "kind": kind,
        "name": name,
        "limit": lock.limit,
        "holders": [
            {"run": h.run_id, "task": h.task_id, "attempt": h.attempt, "worker": h.worker_id}
            for h in lock.holders
        ],
        "waiters": [{"run": r, "task": t} for r, t in lock.waiters],
    }


def local_iso(ts: float, tz: str) -> str:
    """Epoch seconds as ISO 8601 in a schedule's time zone, to the second."""
    return datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz)).isoformat(timespec="seconds")


def next_fire_times(entry: CronEntry, *, now: float, count: int) -> list[float]:
    """The schedule's next `count` fire times after `now` (and after its last handled tick)."""
    s = entry.schedule
    from runner.cron import ticks  # cron loads only for schedules

    return ticks.next_ticks(s.cron, s.timezone, after=max(now, entry.last_tick), count=count)


def entry_json(store: Store, entry: CronEntry, *, now: float) -> dict[str, Any]:
    """One schedule as `runner cron list -o json` shows it."""
    from runner.cron import fire

    state = fire.last_run_state(store, entry)
    upcoming = [] if entry.suspended else next_fire_times(entry, now=now, count=1)
    s = entry.schedule
    return {
        "name": entry.name,
        "schedule": s.cron,
        "timezone": s.timezone,
        "suspended": entry.suspended,
        "concurrency_policy": s.concurrency_policy.value,
        "last_run": entry.last_run_id,
        "last_run_state": None if state is None else state.value,
        "next": iso(upcoming[0]) if upcoming else None,
        "next_local": local_iso(upcoming[0], s.timezone) if upcoming else None,
        "missed": entry.missed,
        "skipped": entry.skipped,
        "source": entry.source,
    }


def log_after(before: str, text: str) -> str:
    """What `text` adds to `before` (both reads of one attempt's stored log). The store keeps
    only the last bytes of a log, so once it trims, the old text's end is found again inside
    the new one."""
    if text.startswith(before):
        return text[len(before) :]
    tail = before[-256:]
    at = text.rfind(tail) if tail else -1
    return text[at + len(tail) :] if at >= 0 else text
