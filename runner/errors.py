"""The RunnerError tree and the exit codes the CLI maps them to.

    RunnerError (70)                       unexpected runner error
    ├── UsageError (2)                     bad command-line argument
    ├── WorkflowInvalid (2)                a workflow file has problems (.problems)
    │   └── CycleDetected (2)              the task graph has a cycle (.cycle)
    ├── ConfigError (3)                    bad settings (store URL, env var)
    │   └── NoStore (3)                    a read-only command found no store file (.url)
    ├── StoreError (3)                     the store failed or holds something unreadable
    │   └── StoreUnavailable (3)           the store cannot be reached or opened
    ├── RunNotFound (2)                    no run with that id (.run_id)
    ├── TaskNotFound (2)                   no task with that id in the run (.run_id, .task)
    ├── RunExists (2)                      a run with that idempotency key exists (.run_id)
    ├── ScheduleNotFound (2)               no schedule with that name (.name)
    ├── LeaseLost (70)                     a worker's claim is gone (.run_id, .task)
    │   └── WorkerLeaseLost (70)           the worker's own lease expired (.worker_id)
    ├── RunFailed (1)                      the run ended failed (.run_id)
    ├── RunCancelled (5)                   the run was cancelled (.run_id)
    └── WaitTimeout (4)                    gave up waiting (--timeout)

Exit codes: 0 ok, 1 the run failed, 2 usage or invalid workflow, 3 store unavailable or bad config,
4 gave up waiting, 5 the run was cancelled, 70 internal error, 130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_TIMEOUT = 4
EXIT_CANCELLED = 5
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for a message: a hostile name can be megabytes long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunnerError(Exception):
    """Unexpected runner error."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(RunnerError):
    """Invalid command-line usage."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One problem in a workflow file, located at the YAML node at fault (1-based line/col).

    Line 0 means the problem is the file as a whole (it cannot be read): no position is shown.
    """

    file: str
    line: int
    col: int
    message: str
    path: str = ""  # dotted path of the node, e.g. "spec.tasks[0].retries"

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
        }


class WorkflowInvalid(RunnerError):
    """The workflow file is invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem], message: str | None = None) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.message))
        super().__init__(message or "\n".join(str(p) for p in self.problems))


class CycleDetected(WorkflowInvalid):
    """The task graph has a cycle."""

    def __init__(self, problems: list[Problem], cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(problems)


class ConfigError(RunnerError):
    """Invalid configuration."""

    exit_code = EXIT_STORE


class NoStore(ConfigError):
    """There is no store there yet."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(message)


class StoreError(RunnerError):
    """The store failed."""

    exit_code = EXIT_STORE


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class RunNotFound(RunnerError):
    """No such run."""

    exit_code = EXIT_USAGE

    def __init__(self, run_id: str, message: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message or f"run {clip(run_id)!r} not found; `runner get runs` lists runs")


class TaskNotFound(RunnerError):
    """No such task in the run."""

    exit_code = EXIT_USAGE

    def __init__(self, run_id: str, task: str) -> None:
        self.run_id = run_id
        self.task = task
        super().__init__(
            f"run {clip(run_id)!r} has no task {clip(task)!r}; `runner get run {clip(run_id)}` "
            "lists them"
        )


class ScheduleNotFound(RunnerError):
    """No such schedule."""

    exit_code = EXIT_USAGE

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"schedule {clip(name)!r} not found; `runner cron list` lists schedules")


class RunExists(RunnerError):
    """A run with that key already exists."""

    exit_code = EXIT_USAGE

    def __init__(self, run_id: str, key: str) -> None:
        self.run_id = run_id
        self.key = key
        super().__init__(f"a run with key {clip(key)!r} already exists: {run_id}")


class LeaseLost(RunnerError):
    """The worker no longer owns this attempt; nothing was recorded."""

    def __init__(self, run_id: str, task: str, attempt: int) -> None:
        self.run_id = run_id
        self.task = task
        self.attempt = attempt
        super().__init__(
            f"lease lost for {run_id}/{task} attempt {attempt}: another worker owns it now"
        )


class WorkerLeaseLost(LeaseLost):
    """The worker's own lease expired: every attempt it held is lost; it must re-register."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.run_id = ""
        self.task = ""
        self.attempt = 0
        RunnerError.__init__(
            self, f"worker {worker_id}: its lease expired; stop its tasks and register"
        )


class RunFailed(RunnerError):
    """The run failed."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, run_id: str, message: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message or f"run {run_id} failed")


class RunCancelled(RunnerError):
    """The run was cancelled."""

    exit_code = EXIT_CANCELLED

    def __init__(self, run_id: str, message: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message or f"run {run_id} was cancelled")


class WaitTimeout(RunnerError):
    """Gave up waiting."""

    exit_code = EXIT_TIMEOUT
