"""The etcd store's record shapes and their codec (see docs/ARCHITECTURE.md, "etcd data model").

Records are JSON objects; the TypedDicts below name their fields so mypy checks every read.
They cost nothing at run time: a record is the dict `loads` returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

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

SLOT_BITS = 8  # token = claim revision << 8 | slot: tasks claimed in one txn get distinct tokens


class AttemptRec(TypedDict):
    """One attempt in a task record's `attempts`."""

    number: int
    state: str  # AttemptState
    worker: str
    token: int  # 0 while running: the token is the claim's revision and `slot`
    slot: NotRequired[int]  # its place in the claim transaction
    started_at: float
    exit_code: NotRequired[int | None]
    reason: NotRequired[str | None]  # Reason
    error: NotRequired[str | None]
    finished_at: NotRequired[float | None]


class TaskRec(TypedDict):
    """`task/{run}/{task}`: a task of a run."""

    order: int  # plan order
    spec: dict[str, Any]  # TaskSpec.to_dict()
    state: str  # TaskState
    attempts: list[AttemptRec]
    outputs: dict[str, str]
    losses: int  # attempts lost to dead workers (counted ones)
    ready_at: float | None
    succ: list[str]  # successors
    refs: list[str]  # tasks whose outputs its templates read
    waiting: NotRequired[list[str]]  # narrow task: dependencies not yet terminal
    wide: NotRequired[int]  # wide task: the number of its dependencies (arrivals counted)
    fan: NotRequired[dict[str, int]]  # its wide successors -> the arrivals each waits for
    dsp: NotRequired[str | None]  # the run's dispatch strategy, copied to its queue entries
    qkey: NotRequired[str]  # its queue entry (or assignment) while queued
    waiting_reason: NotRequired[None]  # cleared by a claim or retry
    gate: NotRequired[str]  # if/forEach: open | passed | expanded | joined (etcd gates.py)
    why: NotRequired[str]  # why a gated task ended without running
    age: NotRequired[list[float]]  # spec.aging of its run: [every, by]


class RunRec(TypedDict):
    """`run/{run}`: a run (`run_to_dict`)."""

    id: str
    workflow: str
    state: str  # RunState
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    key: str | None  # idempotency key
    scheduled_time: float | None
    plan_hash: str
    tasks_total: int
    reason: str | None
    fail_fast: bool
    parallelism: int | None  # most tasks of the run running at once
    halted: bool  # failFast tripped or ended: no new claims, unstarted tasks cancelled
    dispatch: str | None  # the run's `spec.dispatch` strategy
    hooks: NotRequired[list[dict[str, Any]]]  # spec.hooks (HookSpec.to_dict), if any
    hook_ends: NotRequired[int]  # how many times the run ended with hooks recorded
    group: NotRequired[str]  # its concurrency group (`spec.concurrency`, see `groups`)
    ggen: NotRequired[int]  # retries of a grouped run: each one queues it in its group again


class HookRec(TypedDict):
    """`hook/{run}/{index}`: a hook delivery recorded at the run's end (`etcd/hooks.py`)."""

    index: int
    on: list[str]
    kind: str  # webhook | command
    end: int  # which end of the run recorded it
    state: str  # HookState
    attempts: int
    last_error: str | None
    due_at: float
    token: str | None  # the claim's token while delivering
    holder: str | None
    expires_at: float | None  # the claim's lease


class QueueEntry(TypedDict):
    """`queue/...` and `assign/{worker}/...`: a ready task in the queue."""

    nb: float  # not before (a retry's backoff)
    sel: dict[str, str]  # worker selector
    lk: NotRequired[list[tuple[str, int]]]  # locks: (name, limit)
    dsp: NotRequired[str | None]  # the run's dispatch strategy


class OwnRec(TypedDict):
    """`own/{run}/{task}`: the running attempt's ownership, on the worker's lease."""

    worker: str
    attempt: int
    nonce: str  # the claim's (or hand-off's) nonce, to find it after a lost reply
    slot: int  # its place in the claim transaction (part of the token)


class HeldRec(TypedDict):
    """`held/{worker}/{run}/{task}`: an attempt the worker holds (no lease: survives it)."""

    attempt: int


class LockRec(TypedDict):
    """`lock/{name}/{run}/{task}`: a held mutex or semaphore slot, on the holder's lease."""

    worker: str
    attempt: int


class WorkerRec(TypedDict):
    """`worker/{id}`: a live worker, on its lease."""

    id: str
    name: str
    host: str
    pid: int
    labels: dict[str, str]
    weight: int
    capacity: int
    version: str
    running: int
    heartbeat_at: float
    expires_at: float
    ttl: float
    lease: int  # its etcd lease id
    draining: NotRequired[bool]
    # how far its clock is from the other workers' beyond runner.store.liveness.SKEW_BOUND
    clock_skew: NotRequired[float | None]


class ActiveRec(TypedDict):
    """`active/{run}`: an unfinished run."""

    deadline: float | None  # when its timeout fails it


class LogMeta(TypedDict):
    """`logmeta/{run}/{task}/{attempt}`: the kept chunks of an attempt's log."""

    chunks: list[list[int]]  # [chunk number, size]
    next: int  # the next chunk number


class ArrivalRec(TypedDict):
    """`arr/{run}/{task}/{dep}`: a dependency of a wide task that became terminal."""

    st: str  # its TaskState
    af: bool  # its allowFailure


class LeaderRec(TypedDict):
    """`cron/leader`: the leading scheduler, on its election lease."""

    candidate: str
    lease: int


class DispatchRec(TypedDict):
    """`cluster/dispatch`: the leading scheduler's dispatch default, on its election lease."""

    owner: str
    strategy: str


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


# Typed readers: `loads` itself at run time (no call added), a record shape for mypy.
if TYPE_CHECKING:

    def load_task(raw: bytes) -> TaskRec: ...
    def load_run(raw: bytes) -> RunRec: ...
    def load_entry(raw: bytes) -> QueueEntry: ...
    def load_own(raw: bytes) -> OwnRec: ...
    def load_lock(raw: bytes) -> LockRec: ...
    def load_worker(raw: bytes) -> WorkerRec: ...
    def load_active(raw: bytes) -> ActiveRec: ...
    def load_arrival(raw: bytes) -> ArrivalRec: ...
    def load_leader(raw: bytes) -> LeaderRec: ...
    def load_dispatch(raw: bytes) -> DispatchRec: ...

else:
    load_task = load_run = load_entry = load_own = load_lock = load_worker = loads
    load_active = load_arrival = load_leader = load_dispatch = loads


# ---------------------------------------------------------------------- records


def attempt_to_dict(a: Attempt) -> AttemptRec:
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


def attempt_from_dict(d: AttemptRec, mod: int = 0) -> Attempt:
    return Attempt(
        number=int(d["number"]),
        state=AttemptState(d["state"]),
        worker=d["worker"],
        token=int(d["token"]) or token_of(mod, int(d.get("slot", 0))),
        exit_code=d.get("exit_code"),
        reason=None if (r := d.get("reason")) is None else Reason(r),
        error=d.get("error"),
        started_at=float(d.get("started_at") or 0.0),
        finished_at=d.get("finished_at"),
    )


def task_record(d: TaskRec, mod: int) -> TaskRecord:
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
        allow_failure=bool(d["spec"].get("allowFailure", False)),
        retries=int((d["spec"].get("retries") or {}).get("limit", 0)),
        depends=tuple(d["spec"].get("depends", ())),
    )


def waiting_reason(d: Mapping[str, Any]) -> str | None:
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
    return d.get("why")


def run_to_dict(
    run: Run, *, fail_fast: bool, parallelism: int | None, dispatch: str | None
) -> RunRec:
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
        "fail_fast": fail_fast,
        "parallelism": parallelism,
        "halted": False,
        "dispatch": dispatch,
    }


def run_from_dict(d: RunRec, *, done: int = 0) -> Run:
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
        group=d.get("group"),
    )


def worker_info(d: WorkerRec) -> WorkerInfo:
    """A worker record as `list_workers` shows it."""
    fields = {k: v for k, v in d.items() if k not in ("ttl", "lease")}
    return WorkerInfo(**fields)  # type: ignore[arg-type]
