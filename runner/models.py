"""Frozen domain records shared by every layer: plans, runs, tasks, attempts, leases, outcomes."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, overload

JSON = Any  # a value made of dict/list/str/int/float/bool/None


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for dependencies
    READY = "ready"  # in the queue
    RUNNING = "running"  # claimed by a worker
    RETRYING = "retrying"  # failed an attempt, waiting for its backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES


TERMINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)


class AttemptState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


class Reason(StrEnum):
    """Why an attempt ended."""

    EXIT = "exit"  # the process exited (zero or not)
    TIMEOUT = "timeout"  # the task's timeout ran out
    LOST = "lost"  # the worker's lease expired
    CANCELLED = "cancelled"  # the run was cancelled
    ERROR = "error"  # runner could not start or run the task
    CACHED = "cached"  # a cache hit: the outputs of an earlier success, no process started


class When(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    ALWAYS = "always"


class Kind(StrEnum):
    RUN = "run"  # shell form
    ARGS = "args"  # exec form
    CALL = "call"  # Python callable
    WORKFLOW = "workflow"  # a sub-run of another workflow file


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    delay: float = 1.0  # seconds before the first retry
    factor: float = 2.0
    max: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    limit: int = 0  # retries after the first attempt
    backoff: Backoff = field(default_factory=Backoff)

    def delay_for(self, failed_attempts: int) -> float:
        """Backoff before the retry that follows `failed_attempts` failed attempts (>= 1)."""
        delay = self.backoff.delay * self.backoff.factor ** max(0, failed_attempts - 1)
        return delay if self.backoff.max is None else min(delay, self.backoff.max)


@dataclass(frozen=True, slots=True, kw_only=True)
class Semaphore:
    name: str
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ForEach:
    """`forEach: ${{ tasks.TASK.outputs.OUTPUT }}`: one instance per item of that JSON list."""

    task: str  # the upstream task (not a matrix task: its id is its name)
    output: str
    limit: int = 10_000  # most instances of one expansion (spec.limits.forEach)


@dataclass(frozen=True, slots=True, kw_only=True)
class Aging:
    """`spec.aging`: a queued task's priority grows by `by` every `every` seconds it waits."""

    every: float
    by: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """Where a secret env value comes from: the worker's environment variable `from_env` or
    the file `from_file` (read when the attempt starts; only the reference is stored)."""

    from_env: str | None = None
    from_file: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"fromEnv": self.from_env} if self.from_env else {"fromFile": self.from_file or ""}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> SecretRef:
        return cls(from_env=d.get("fromEnv"), from_file=d.get("fromFile"))


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """A task's `cache:` (docs/WORKFLOW.md "Cached tasks"), resolved when planning.

    `inputs_hash` is the task's fingerprint when planned: its spec, `key`, the files `files`
    matched (relative to the workflow file's folder) and its dependencies' fingerprints
    (runner.cache.inputs); `refresh` (`runner apply --no-cache`) skips the lookup but
    still records the result.
    """

    key: str = ""
    files: tuple[str, ...] = ()
    inputs_hash: str = ""
    max_age: float | None = None  # seconds; None: entries never expire by age
    refresh: bool = False

    def to_dict(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "key": self.key,
            "files": list(self.files),
            "inputsHash": self.inputs_hash,
            "maxAge": self.max_age,
        }
        if self.refresh:
            out["refresh"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict[str, JSON]) -> CachePolicy:
        max_age = d.get("maxAge")
        return cls(
            key=str(d.get("key", "")),
            files=tuple(d.get("files") or ()),
            inputs_hash=str(d.get("inputsHash", "")),
            max_age=None if max_age is None else float(max_age),
            refresh=bool(d.get("refresh", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubRun:
    """A `workflow:` task's sub-run (docs/WORKFLOW.md "Sub-runs"), planned with the parent:
    `plan` is the child's plan JSON (`planview.plan_to_json`) for `params`."""

    workflow: str  # the path as written in the task
    params: dict[str, JSON] = field(default_factory=dict)
    plan: dict[str, JSON] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSON]:
        return {"workflow": self.workflow, "params": self.params, "plan": self.plan}

    @classmethod
    def from_dict(cls, d: dict[str, JSON]) -> SubRun:
        return cls(workflow=str(d["workflow"]), params=dict(d.get("params") or {}), plan=d["plan"])


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheEntry:
    """A recorded success of a cached task: what a later attempt with the same key restores."""

    key: str  # the full cache key (runner.cache.cache_key)
    outputs: dict[str, str] = field(default_factory=dict)
    workflow: str = ""
    task: str = ""  # the task instance id
    run_id: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One task instance of a plan with every plan-time field resolved.

    Templates that only run time can fill (`${{ tasks.X.outputs.K }}`, `${{ run.id }}`,
    `${{ run.scheduled_time }}`) stay in `run`, `args`, `with_` and `env` as written;
    `runner.templating.render_runtime` fills them when the attempt starts.
    """

    id: str  # instance id: "name" or "name[key=value,...]"
    name: str
    kind: Kind
    run: str | None = None
    args: tuple[str, ...] | None = None
    call: str | None = None
    with_: dict[str, JSON] = field(default_factory=dict)
    shell: tuple[str, ...] = ("/bin/sh", "-c")
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    priority: int = 0
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    depends: tuple[str, ...] = ()  # instance ids
    when: When = When.SUCCESS
    allow_failure: bool = False
    matrix: dict[str, JSON] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)
    mutex: str | None = None
    semaphore: Semaphore | None = None
    if_: str | None = None  # the `if:` condition, evaluated when the task becomes ready
    for_each: ForEach | None = None  # a dynamic task: expanded when it becomes ready
    item: JSON = None  # an instance of a forEach task: its item
    secret_env: dict[str, SecretRef] = field(default_factory=dict)  # env read by the worker
    cache: CachePolicy | None = None
    subrun: SubRun | None = None  # kind WORKFLOW, once planned

    def to_dict(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "priority": self.priority,
            "depends": list(self.depends),
            "when": self.when.value,
            "allowFailure": self.allow_failure,
            "retries": {
                "limit": self.retries.limit,
                "backoff": {
                    "delay": self.retries.backoff.delay,
                    "factor": self.retries.backoff.factor,
                    "max": self.retries.backoff.max,
                },
            },
            "timeout": self.timeout,
            "env": dict(sorted(self.env.items())),
            "workdir": self.workdir,
            "matrix": self.matrix,
            "selector": dict(sorted(self.selector.items())),
            "mutex": self.mutex,
            "semaphore": (
                None
                if self.semaphore is None
                else {"name": self.semaphore.name, "limit": self.semaphore.limit}
            ),
        }
        if self.if_ is not None:  # written only when set: older plans keep their hash
            out["if"] = self.if_
        if self.for_each is not None:
            fe = self.for_each
            out["forEach"] = {"task": fe.task, "output": fe.output, "limit": fe.limit}
        if self.item is not None:
            out["item"] = self.item
        if self.secret_env:  # only when present: plans without secrets keep their hash
            out["secretEnv"] = {k: v.to_dict() for k, v in sorted(self.secret_env.items())}
        if self.cache is not None:  # only when set: plans without caches keep their hash
            out["cache"] = self.cache.to_dict()
        if self.subrun is not None:
            out["subrun"] = self.subrun.to_dict()
        if self.kind is Kind.RUN:
            out["run"] = self.run
            out["shell"] = list(self.shell)
        elif self.kind is Kind.ARGS:
            out["args"] = list(self.args or ())
        else:
            out["call"] = self.call
            out["with"] = self.with_
        return out

    @classmethod
    def from_dict(cls, d: dict[str, JSON]) -> TaskSpec:
        # Every claim parses one: enum members and retry policies are looked up, not built.
        r = d.get("retries") or {}
        b = r.get("backoff") or {}
        sem = d.get("semaphore")
        args = d.get("args")
        timeout = d.get("timeout")
        cache = d.get("cache")
        subrun = d.get("subrun")
        return cls(
            id=d["id"],
            name=d["name"],
            kind=_KINDS.get(d["kind"]) or Kind(d["kind"]),
            run=d.get("run"),
            args=None if args is None else tuple(args),
            call=d.get("call"),
            with_=dict(d.get("with") or {}),
            shell=tuple(d.get("shell") or ("/bin/sh", "-c")),
            env=dict(d.get("env") or {}),
            workdir=d.get("workdir"),
            priority=int(d.get("priority", 0)),
            retries=_retry_policy(
                int(r.get("limit", 0)),
                float(b.get("delay", 1.0)),
                float(b.get("factor", 2.0)),
                None if b.get("max") is None else float(b["max"]),
            ),
            timeout=None if timeout is None else float(timeout),
            depends=tuple(d.get("depends") or ()),
            when=_WHENS.get(d.get("when", "success")) or When(d["when"]),
            allow_failure=bool(d.get("allowFailure", False)),
            matrix=dict(d.get("matrix") or {}),
            selector=dict(d.get("selector") or {}),
            mutex=d.get("mutex"),
            semaphore=None if not sem else Semaphore(name=sem["name"], limit=int(sem["limit"])),
            if_=d.get("if"),
            for_each=None if "forEach" not in d else ForEach(**d["forEach"]),
            item=d.get("item"),
            secret_env=_secret_env(d.get("secretEnv")),
            cache=None if cache is None else CachePolicy.from_dict(cache),
            subrun=None if subrun is None else SubRun.from_dict(subrun),
        )


def _secret_env(d: dict[str, dict[str, str]] | None) -> dict[str, SecretRef]:
    return {k: SecretRef.from_dict(v) for k, v in d.items()} if d else {}


_KINDS = {k.value: k for k in Kind}
_WHENS = {w.value: w for w in When}


@functools.lru_cache(maxsize=256)
def _retry_policy(limit: int, delay: float, factor: float, max_: float | None) -> RetryPolicy:
    """Retry policies are immutable and few: one shared instance per distinct value."""
    return RetryPolicy(limit=limit, backoff=Backoff(delay=delay, factor=factor, max=max_))


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline: float | None = None  # seconds
    suspend: bool = False
    catchup: str = "latest"  # "latest" | "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class CronEntry:
    """A registered schedule: the plan it submits and the scheduler's tick bookkeeping.

    `plan` is the plan's JSON (`planview.plan_to_json`); `plan_hash` tells whether a re-apply
    changed anything. `last_tick` is the latest tick handled (fired, skipped or missed): the
    scheduler considers only ticks after it. `suspended` starts as the file's `suspend` and is
    flipped by `runner cron suspend|resume`.
    """

    name: str  # the workflow name
    plan: dict[str, JSON]
    plan_hash: str
    schedule: Schedule
    source: str = ""
    suspended: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    last_tick: float = 0.0
    last_run_id: str | None = None
    missed: int = 0  # ticks never fired: past the starting deadline, or not the latest
    skipped: int = 0  # ticks not fired because the previous run was active (Forbid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Concurrency:
    """`spec.concurrency`: at most one run of `group` runs at a time; a new run either cancels
    the group's unfinished runs (`cancel_in_progress`) or queues behind them."""

    group: str
    cancel_in_progress: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A workflow expanded for one set of params: the unit `runner apply` submits.

    `tasks` is in a stable topological order: a tuple, or for a large plan `StreamedTasks`,
    made again on each pass rather than held. `hash` is the sha256 of the plan's canonical JSON
    (everything but the hash and `source`), so the same file and params give the same hash.
    """

    workflow: str
    source: str = ""  # the file it came from, for messages
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    params: dict[str, JSON] = field(default_factory=dict)
    fail_fast: bool = False
    parallelism: int | None = None
    timeout: float | None = None
    schedule: Schedule | None = None
    dispatch: str | None = None
    aging: Aging | None = None
    tasks: Sequence[TaskSpec] = ()
    hash: str = ""
    hooks: tuple[HookSpec, ...] = ()  # spec.hooks, in file order (docs/HOOKS.md)
    concurrency: Concurrency | None = None

    def task(self, task_id: str) -> TaskSpec:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)


class StreamedTasks(Sequence[TaskSpec]):
    """A large plan's task instances (docs/ARCHITECTURE.md, "Large plans"): `make` makes them
    again, in the same order, on each pass, so a million instances are never held at once.
    Passes cost planning time: consumers take what they need in one pass where they can."""

    __slots__ = ("_len", "_make")

    def __init__(self, make: Callable[[], Iterator[TaskSpec]], length: int) -> None:
        self._make = make
        self._len = length

    def __iter__(self) -> Iterator[TaskSpec]:
        return self._make()

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> TaskSpec: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[TaskSpec, ...]: ...
    def __getitem__(self, i: int | slice) -> TaskSpec | tuple[TaskSpec, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        if not -self._len <= i < self._len:
            raise IndexError(i)
        return next(itertools.islice(self, i % self._len, None))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != self._len:
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def map(self, f: Callable[[TaskSpec], TaskSpec]) -> StreamedTasks:
        """These instances with `f` applied to each on every pass."""
        make = self._make
        return StreamedTasks(lambda: map(f, make()), self._len)


def map_tasks(tasks: Sequence[TaskSpec], f: Callable[[TaskSpec], TaskSpec]) -> Sequence[TaskSpec]:
    """`tasks` with `f` applied to each: a tuple for a tuple, streamed for streamed."""
    if isinstance(tasks, StreamedTasks):
        return tasks.map(f)
    return tuple(f(t) for t in tasks)


# --------------------------------------------------------------------------- runs in the store

TaskKey = tuple[str, str]  # (run_id, task_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    number: int  # 1-based
    state: AttemptState
    worker: str
    token: int
    exit_code: int | None = None
    reason: Reason | None = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A task instance of a stored run, as `get_run` shows it."""

    id: str
    name: str
    state: TaskState
    priority: int
    waiting_reason: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    losses: int = 0  # attempts lost with their worker
    ready_at: float | None = None  # when it became ready (or is due again after a backoff)
    allow_failure: bool = False  # its failure does not fail the run (`allowFailure`)
    retries: int = 0  # the retries its policy allows after the first attempt
    depends: tuple[str, ...] = ()  # instance ids it waits for (the run's DAG edges)

    @property
    def cached(self) -> bool:
        """Whether it succeeded from the cache (its last attempt restored a cache entry)."""
        return bool(self.attempts) and self.attempts[-1].reason is Reason.CACHED


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    workflow: str
    state: RunState
    params: dict[str, JSON] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    key: str | None = None  # idempotency key, e.g. "cron:<schedule>:<tick>"
    scheduled_time: float | None = None
    plan_hash: str = ""
    tasks_total: int = 0
    tasks_done: int = 0  # tasks in a terminal state
    tasks: tuple[TaskRecord, ...] = ()  # filled by get_run, empty in list_runs
    reason: str | None = None  # why it ended, when not plain success/failure
    hooks: tuple[HookStatus, ...] = ()  # deliveries recorded at the run's end (get_run)
    group: str | None = None  # its concurrency group (spec.concurrency.group)
    waiting_reason: str | None = None  # e.g. "queued: group deploy-prod" (get_run, list_runs)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """What run-time templates may read: `${{ run.* }}` and upstream outputs."""

    run_id: str
    scheduled_time: float | None = None
    params: dict[str, JSON] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # task id -> outputs


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A worker's token-checked claim on one attempt. `token` fences every later write."""

    run_id: str
    task_id: str
    attempt: int
    token: int
    worker_id: str
    spec: TaskSpec
    context: RunContext

    @property
    def key(self) -> TaskKey:
        return (self.run_id, self.task_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How an attempt ended, as the worker reports it to `Store.finish`."""

    succeeded: bool
    reason: Reason = Reason.EXIT
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # a one-line reason shown in `get run`
    log_tail: str = ""  # the last bytes of the attempt's log not yet sent with append_log
    # When the attempt began to run, if not when it was claimed (a prefetched task waits for
    # a slot): the recorded attempt's `started_at`.
    started_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    id: str  # unique per worker process: name + random suffix
    name: str
    host: str = ""
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    weight: int = 1
    capacity: int = 1
    version: str = ""
    running: int = 0
    heartbeat_at: float = 0.0
    expires_at: float = 0.0
    assigned: int = 0  # queued tasks a dispatcher assigned to it, not yet claimed
    draining: bool = False  # `runner worker drain` asked it to stop
    # how far its clock is from the other workers' (positive: ahead), when beyond the bound of
    # runner.store.liveness.SKEW_BOUND; None when they agree (docs/RELIABILITY.md)
    clock_skew: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The answer to a worker's heartbeat: attempts it holds that it must stop, and whether
    it was asked to drain (`runner worker drain NAME`)."""

    abort: frozenset[TaskKey] = frozenset()
    drain: bool = False


# --------------------------------------------------------------------------- the cluster

DISPATCH_STRATEGIES = ("pull", "round_robin", "random", "least_load", "weighted")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadyTask:
    """A queued, claimable, unassigned task as a dispatcher sees it."""

    run_id: str
    task_id: str
    priority: int = 0
    selector: dict[str, str] = field(default_factory=dict)
    dispatch: str | None = None  # the run's own strategy (spec.dispatch); None: the default

    @property
    def key(self) -> TaskKey:
        return (self.run_id, self.task_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchView:
    """One consistent read for a dispatcher: live workers (with `running` counted from the
    attempts they own and `assigned` from their assignments) and the ready tasks."""

    workers: tuple[WorkerInfo, ...] = ()
    tasks: tuple[ReadyTask, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LockHolder:
    run_id: str
    task_id: str
    attempt: int
    worker_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LockInfo:
    """A mutex (limit 1) or semaphore: who holds it and which queued tasks want it."""

    name: str
    limit: int
    holders: tuple[LockHolder, ...] = ()
    waiters: tuple[TaskKey, ...] = ()


# --------------------------------------------------------------------------- hooks


class HookOn(StrEnum):
    """When a hook fires (`spec.hooks[].on`)."""

    FAILURE = "failure"
    SUCCESS = "success"
    ALWAYS = "always"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    MISSED_TICK = "missed_tick"


class HookState(StrEnum):
    """A recorded delivery: `due` (waiting, maybe for its backoff), `delivering` (claimed by a
    deliverer under a lease), `delivered`, or `failed` (gave up after its retries)."""

    DUE = "due"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class HookSpec:
    """One entry of `spec.hooks`: a command (`run`/`args`, run like a task) or a webhook.

    Header values are text or a secret reference (`{"fromEnv": NAME}` / `{"fromFile": PATH}`),
    resolved by the deliverer when it sends, never stored resolved.
    """

    on: tuple[str, ...]
    run: str | None = None
    args: tuple[str, ...] | None = None
    shell: tuple[str, ...] = ("/bin/sh", "-c")
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    url: str | None = None
    headers: dict[str, JSON] = field(default_factory=dict)
    when: str | None = None  # only for runs of this named schedule
    retries: int = 5

    def fires(self, *, state: RunState, reason: str | None, run_key: str | None) -> bool:
        """Whether this hook is due when a run (idempotency key `run_key`) ends in `state`."""
        if self.when is not None and not (run_key or "").startswith(f"cron:{self.when}:"):
            return False
        return bool(set(self.on) & hook_events(state, reason))

    @property
    def kind(self) -> str:
        """`webhook` or `command`."""
        return "webhook" if self.url is not None else "command"

    def fires_on_missed(self, *, run_key: str | None) -> bool:
        """Whether this hook is due when its schedule missed ticks (with its latest run)."""
        if self.when is not None and not (run_key or "").startswith(f"cron:{self.when}:"):
            return False
        return HookOn.MISSED_TICK.value in self.on

    def to_dict(self) -> dict[str, JSON]:
        return {
            "on": list(self.on),
            "run": self.run,
            "args": None if self.args is None else list(self.args),
            "shell": list(self.shell),
            "env": dict(self.env),
            "workdir": self.workdir,
            "timeout": self.timeout,
            "url": self.url,
            "headers": dict(self.headers),
            "when": self.when,
            "retries": self.retries,
        }

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> HookSpec:
        args = data.get("args")
        return cls(
            on=tuple(data["on"]),
            run=data.get("run"),
            args=None if args is None else tuple(args),
            shell=tuple(data.get("shell") or ("/bin/sh", "-c")),
            env=dict(data.get("env") or {}),
            workdir=data.get("workdir"),
            timeout=data.get("timeout"),
            url=data.get("url"),
            headers=dict(data.get("headers") or {}),
            when=data.get("when"),
            retries=int(data.get("retries", 5)),
        )


def hook_events(state: RunState, reason: str | None) -> set[str]:
    """The `on` values a run's end matches: `always` plus its own kind of end."""
    events = {HookOn.ALWAYS.value}
    if state == RunState.SUCCEEDED:
        events.add(HookOn.SUCCESS.value)
    elif state == RunState.CANCELLED:
        events.add(HookOn.CANCELLED.value)
    elif state == RunState.FAILED:
        events.add(HookOn.FAILURE.value)
        if reason == "timeout":
            events.add(HookOn.TIMEOUT.value)
    return events


@dataclass(frozen=True, slots=True, kw_only=True)
class HookStatus:
    """A recorded delivery as `get_run` shows it."""

    index: int  # the hook's place in spec.hooks
    on: tuple[str, ...]
    state: HookState
    attempts: int = 0
    last_error: str | None = None
    due_at: float = 0.0  # when it may next be tried
    kind: str = "webhook"  # or "command"


@dataclass(frozen=True, slots=True, kw_only=True)
class HookDelivery:
    """A deliverer's token-checked claim on one recorded delivery (`Store.claim_hook`)."""

    run_id: str
    index: int
    end: int  # which end of the run (1, then 2 after a retry_run ended again)
    spec: HookSpec
    token: str
    attempt: int  # 1-based: this claim's try
    expires_at: float  # the claim's lease; past it another deliverer may take it

    @property
    def key(self) -> str:
        """The idempotency key sent with it (`Runner-Delivery`)."""
        return f"{self.run_id}/{self.index}/{self.end}"
