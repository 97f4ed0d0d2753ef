"""The etcd store's key layout and record codecs (see docs/ARCHITECTURE.md, "etcd data model").

Every key lives under the store prefix. Task ids and run ids are percent-quoted so a `/` inside
one never splits a key. Records are JSON; the queue key encodes priority and ready time so one
ascending range read returns the highest priority first, then the earliest ready.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

import orjson

from runner.models import Attempt, AttemptState, Reason, Run, RunState, TaskRecord, TaskState

SLOT_BITS = 8  # token = claim revision << 8 | slot: tasks claimed in one txn get distinct tokens
PRIORITY_BIAS = 10**9  # queue keys sort ascending; 10**9 - priority puts high priorities first


@lru_cache(maxsize=1 << 16)
def q(part: str) -> str:
    """`part` percent-quoted for a key (cached: the same ids are quoted on every operation)."""
    return quote(part, safe="")


@lru_cache(maxsize=1 << 16)
def _unq(part: str) -> str:
    return unquote(part)


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key of one store prefix."""

    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run/{q(run_id)}"

    def runs(self) -> str:
        return f"{self.prefix}run/"

    def run_key(self, key: str) -> str:
        return f"{self.prefix}runkey/{q(key)}"

    def active(self, run_id: str = "") -> str:
        return f"{self.prefix}active/{q(run_id)}"

    def task(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}task/{q(run_id)}/{q(task_id)}"

    def done(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}done/{q(run_id)}/{q(task_id)}"

    def fail(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}fail/{q(run_id)}/{q(task_id)}"

    def prop(self, run_id: str = "", task_id: str = "") -> str:
        if not run_id:
            return f"{self.prefix}prop/"
        return f"{self.prefix}prop/{q(run_id)}/{q(task_id)}"

    def arrived(self, run_id: str, task_id: str, dep_id: str = "") -> str:
        """A dependency of a wide task that became terminal (its state), once per dependency."""
        return f"{self.prefix}arr/{q(run_id)}/{q(task_id)}/{q(dep_id)}"

    def arrivals(self, run_id: str, task_id: str) -> str:
        """The counter of a wide task's arrivals: its version is their number."""
        return f"{self.prefix}cnt/{q(run_id)}/{q(task_id)}"

    def join(self, run_id: str, task_id: str = "") -> str:
        """A wide task whose dependencies have all arrived, to decide."""
        return f"{self.prefix}join/{q(run_id)}/{q(task_id)}"

    def ending(self, run_id: str = "") -> str:
        return f"{self.prefix}ending/{q(run_id)}"

    def queue(self) -> str:
        return f"{self.prefix}queue/"

    def queue_entry(
        self, priority: int, ready_at: float, seq: int, run_id: str, task_id: str
    ) -> str:
        """queue/{10**9 - priority}/{ready time in µs}/{plan order}/{run}/{task}."""
        micros = max(0, round(ready_at * 1_000_000))
        return (
            f"{self.prefix}queue/{PRIORITY_BIAS - priority:010d}/{micros:017d}/{seq:08d}"
            f"/{q(run_id)}/{q(task_id)}"
        )

    def own(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}own/{q(run_id)}/{q(task_id)}"

    def owns(self) -> str:
        return f"{self.prefix}own/"

    def held(self, worker_id: str, run_id: str = "", task_id: str = "") -> str:
        if not run_id:
            return f"{self.prefix}held/{q(worker_id)}/"
        return f"{self.prefix}held/{q(worker_id)}/{q(run_id)}/{q(task_id)}"

    def helds(self) -> str:
        return f"{self.prefix}held/"

    def worker(self, worker_id: str = "") -> str:
        return f"{self.prefix}worker/{q(worker_id)}"

    def log(self, run_id: str, task_id: str, attempt: int) -> str:
        return f"{self.prefix}log/{q(run_id)}/{q(task_id)}/{attempt:06d}/"

    def log_meta(self, run_id: str, task_id: str, attempt: int) -> str:
        return f"{self.prefix}logmeta/{q(run_id)}/{q(task_id)}/{attempt:06d}"

    def split(self, key: str, kind: str) -> list[str]:
        """The unquoted parts of `key` after `{prefix}{kind}/`."""
        rest = key[len(self.prefix) + len(kind) + 1 :]
        return [_unq(p) for p in rest.split("/")]


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """A record as compact JSON with sorted keys. orjson cannot encode an integer beyond 64
    bits (a YAML parameter may be one): that record is written by the json module, after a
    leading space (still JSON) that tells `loads` to read it back exactly too."""
    try:
        return orjson.dumps(value, option=_ORJSON)
    except TypeError:
        return b" " + json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def loads(raw: bytes) -> Any:
    """A record written by `dumps` (orjson would read a big integer as a float)."""
    if raw[:1] == b" ":
        return json.loads(raw)
    return orjson.loads(raw)


# ---------------------------------------------------------------------- records


def attempt_to_dict(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "state": a.state.value,
        "worker": a.worker,
        "token": a.token,
        "exit_code": a.exit_code,
        "reason": None if a.reason is None else a.reason.value,
        "error": a.error,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
    }


def token_of(revision: int, slot: int) -> int:
    """The fencing token of the `slot`-th task claimed by the transaction at `revision`."""
    return (revision << SLOT_BITS) | slot


def claim_revision(token: int) -> int:
    """The create revision of the ownership key a token stands for."""
    return token >> SLOT_BITS


def attempt_from_dict(d: dict[str, Any], mod: int = 0) -> Attempt:
    return Attempt(
        number=int(d["number"]),
        state=AttemptState(d["state"]),
        worker=d["worker"],
        token=int(d["token"]) or token_of(mod, int(d.get("slot", 0))),
        exit_code=d.get("exit_code"),
        reason=None if d.get("reason") is None else Reason(d["reason"]),
        error=d.get("error"),
        started_at=float(d.get("started_at") or 0.0),
        finished_at=d.get("finished_at"),
    )


def task_record(d: dict[str, Any], mod: int) -> TaskRecord:
    """A stored task as `get_run` shows it; a running attempt's token is the record's `mod`
    (the claim wrote the record in the transaction that created the ownership key)."""
    return TaskRecord(
        id=d["spec"]["id"],
        name=d["spec"]["name"],
        state=TaskState(d["state"]),
        priority=int(d["spec"].get("priority", 0)),
        waiting_reason=waiting_reason(d),
        outputs=dict(d.get("outputs") or {}),
        attempts=tuple(attempt_from_dict(a, mod) for a in d.get("attempts", ())),
        losses=int(d.get("losses", 0)),
        ready_at=d.get("ready_at"),
    )


def waiting_reason(d: dict[str, Any]) -> str | None:
    """Why a task is not running yet, worded as on every backend."""
    state = TaskState(d["state"])
    if state is TaskState.PENDING:
        n = int(d["wide"]) if d.get("wide") else len(d.get("waiting", ()))
        return f"waiting for {n} dependenc{'y' if n == 1 else 'ies'}"
    if state is TaskState.RETRYING:
        until = datetime.fromtimestamp(float(d.get("ready_at") or 0), UTC)
        text = until.isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"retry after backoff until {text}"
    if state is TaskState.READY:
        return "queued"
    return None


def run_to_dict(run: Run, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "state": run.state.value,
        "params": run.params,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "key": run.key,
        "scheduled_time": run.scheduled_time,
        "plan_hash": run.plan_hash,
        "tasks_total": run.tasks_total,
        "reason": run.reason,
        **extra,
    }


def run_from_dict(d: dict[str, Any], *, done: int = 0) -> Run:
    return Run(
        id=d["id"],
        workflow=d["workflow"],
        state=RunState(d["state"]),
        params=dict(d.get("params") or {}),
        created_at=float(d["created_at"]),
        started_at=d.get("started_at"),
        finished_at=d.get("finished_at"),
        key=d.get("key"),
        scheduled_time=d.get("scheduled_time"),
        plan_hash=d.get("plan_hash", ""),
        tasks_total=int(d.get("tasks_total", 0)),
        tasks_done=done,
        reason=d.get("reason"),
    )
