"""Run one task attempt: a process group (`run`, `args`) or a pooled Python call (`call`).

No store knowledge: the worker calls `Executor.run` from one thread per slot and turns the
`ExecResult` into an `Outcome`. Every attempt runs in its own session; timeout, cancel and
`kill_all` stop its whole process group. A per-executor reaper process kills every group when
the worker dies, even by kill -9 (see `runner.executor.reaper`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner import config, models, private
from runner.executor import _contain, _secrets, _spawn
from runner.executor._callpool import CallPool
from runner.executor._log import LogSink
from runner.executor._proc import Ending, Stopper, Supervisor, kill_group
from runner.executor.reaper import TAG_VAR, Reaper
from runner.failpoints import Failpoints

__all__ = ["MAX_OUTPUTS", "ExecResult", "Executor", "Orphans", "parse_outputs"]

# A long-running process without an executor (a scheduler) that may be PID 1 keeps one
# `Orphans(folder=None)` for its lifetime: it reaps every dead child it did not start.
Orphans = _contain.Orphans

MAX_OUTPUTS = 64 * 1024  # bytes of RUNNER_OUTPUT read per attempt
WARM_CALLS = 8  # call children a long-lived worker starts ahead, at most (`warm_calls`)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """How one attempt ended. `exit_code` is negative when a signal killed the process."""

    exit_code: int | None
    reason: models.Reason  # EXIT (any exit code), TIMEOUT, CANCELLED, ERROR
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # one line, e.g. "exit code 3", "timed out after 5s"
    log_tail: str = ""  # the last `log_limit` bytes of the attempt's log

    @property
    def succeeded(self) -> bool:
        return self.reason is models.Reason.EXIT and self.exit_code == 0


def parse_outputs(data: bytes) -> tuple[dict[str, str], list[str]]:
    """`key=value` lines into outputs; blank and `#` lines are skipped; returns the problems."""
    outputs: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            problems.append(f"RUNNER_OUTPUT line {number}: expected key=value, got {line[:60]!r}")
            continue
        outputs[key.strip()] = value.rstrip("\r")
    return outputs, problems


class Executor:
    """Runs attempts for one worker: up to `slots` at a time, logs under `log_dir`.

    `grace` is the time between SIGTERM and SIGKILL when an attempt is stopped. `base_env` is
    the environment tasks start from (default: this process's, read once, here). `contain`
    puts each attempt in a cgroup of its own where the machine allows (`_contain`).
    `secret_source` is where `{fromEnv: NAME}` secrets are read when an attempt starts (default:
    this process's environment); their values, and the `masked` ones, are masked as `***` in
    the attempt's log, tail and outputs.
    """

    def __init__(
        self,
        *,
        slots: int,
        log_dir: str,
        log_limit: int,
        grace: float = 10.0,
        base_env: Mapping[str, str] | None = None,
        failpoints: Failpoints | None = None,
        contain: bool = True,
        secret_source: Mapping[str, str] | None = None,
        masked: Sequence[str] = (),
    ) -> None:
        self._log_dir = Path(log_dir)
        self._log_root = str(self._log_dir)
        self._log_limit = log_limit
        self._grace = grace
        # The environment is read once: copying os.environ per spawn costs more than the spawn.
        self._base_env = {
            **(os.environ if base_env is None else base_env),
            TAG_VAR: secrets.token_hex(8),
        }
        # G9: a task's output (kept in the store) must never be able to carry the store's
        # password; tasks that call runner themselves can use RUNNER_ETCD_PASSWORD_FILE.
        self._base_env.pop(config.ENV_ETCD_PASSWORD, None)
        self._tag = self._base_env[TAG_VAR]
        self._secret_source = os.environ if secret_source is None else secret_source
        self._masked = [m for m in masked if m]
        self._mask_patterns = _secrets.patterns(self._masked)
        self._spawn_env = _spawn.Env(self._base_env)  # encoded once, not per spawn
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._cgroups = _contain.Cgroups(self._tag, enabled=contain)
        if self._cgroups.enabled:  # orphans come back here, still in their attempt's cgroup
            _contain.become_subreaper()
        self._orphans = _contain.Orphans(folder=self._cgroups.folder)
        # Private (0700); the reaper removes it even when this process is killed with -9.
        self._out_dir = tempfile.mkdtemp(prefix=f"runner-outputs-{os.getpid()}-")
        self._reaper = Reaper(
            self._tag,
            failpoints=(failpoints or Failpoints()).spec("reaper."),
            cgroups=self._cgroups.folder,
            scratch=self._out_dir,
        )
        with self._orphans.spawning() as known:
            known.add(self._reaper.start())
        self._counter = itertools.count(1)
        self._dirs: set[str] = set()
        self._running: set[Stopper] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._pool = CallPool(
            size=slots,
            grace=grace,
            base_env=self._env_base,
            on_spawn=self._reaper.register,
            on_exit=self._reaper.unregister,
            cgroups=self._cgroups,
            orphans=self._orphans,
        )

    @property
    def log_limit(self) -> int:
        """How many bytes of each attempt's log `ExecResult.log_tail` keeps."""
        return self._log_limit

    def log_path(self, log_name: str) -> Path:
        """Where the full log of an attempt goes: `log_dir/<log_name>.log`."""
        return Path(self.log_file(log_name))

    def log_file(self, log_name: str) -> str:
        """`log_path` as a string (what the hot path uses: pathlib is slow to build)."""
        parts = log_name.split("/")
        if log_name.startswith("/") or ".." in parts or "" in parts:
            raise ValueError(f"log name {log_name!r} must be a relative path without '..'")
        return f"{self._log_root}/{log_name}.log"

    def run(
        self,
        spec: models.TaskSpec,
        *,
        env: Mapping[str, str],
        log_name: str,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run one attempt of `spec` and block until it has ended (see the module docstring).

        `env` (the RUNNER_* variables of the attempt) goes over `spec.env` over the base
        environment; RUNNER_OUTPUT names a fresh file whose `key=value` lines become outputs.
        `timeout` defaults to `spec.timeout`.
        """
        timeout = spec.timeout if timeout is None else timeout
        stopper = Stopper(
            cancel=cancel,
            deadline=None if timeout is None else time.monotonic() + timeout,
            timeout=timeout,
            killed=threading.Event(),
        )
        path = self.log_file(log_name)
        self._make_dir(os.path.dirname(path))
        secrets, problem = self._secrets(spec)
        masks = _secrets.patterns([*self._masked, *secrets.values()]) if secrets else None
        with LogSink(path, limit=self._log_limit, secrets=masks or self._mask_patterns) as sink:
            outputs: dict[str, str] = {}
            if problem is not None:
                ending = _error(problem)
            else:
                ending, outputs = self._attempt(spec, {**secrets, **env}, sink, stopper)
            if ending.error and ending.reason is models.Reason.ERROR:
                sink.note(ending.error)
        if outputs and (masks or self._mask_patterns):
            shown = [*self._masked, *secrets.values()]
            outputs = {k: _secrets.mask_text(v, shown) for k, v in outputs.items()}
        return ExecResult(
            exit_code=ending.exit_code,
            reason=ending.reason,
            outputs=outputs,
            error=ending.error,
            log_tail=sink.tail(),
        )

    def set_deadline(self, deadline: float | None) -> None:
        """The worker's self-fencing deadline (a `time.monotonic()` value): if it passes without
        a newer one, the reaper process kills every running attempt even while the worker
        itself is stopped (SIGSTOP) or hung. None: no deadline."""
        self._reaper.set_deadline(deadline)

    def kill_all(self) -> None:
        """SIGKILL every running attempt's process group now; they end as CANCELLED."""
        with self._lock:
            running = list(self._running)
        for stopper in running:
            stopper.killed.set()
            if stopper.pgid is not None:
                kill_group(stopper.pgid, signal.SIGKILL)

    def warm_calls(self, count: int = WARM_CALLS) -> None:
        """Start up to `count` call children (at most one per slot) now, so a long-lived
        worker's first call tasks do not wait for interpreters to start (~30 ms each on a quiet
        machine, hundreds under load). `runner worker` and `runner serve` do before they
        register; `runner apply` starts children as its call tasks come (docs/ARCHITECTURE.md).
        A child that cannot start is left to the first call task to start (and report)."""
        try:
            self._pool.warm(count)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("could not start call children ahead: %s", exc)

    def close(self, *, wait: bool = True) -> None:
        """Kill what still runs, stop the call pool and the reaper, remove temp files. Without
        `wait` the reaper sweeps for leftovers and exits on its own, after this returns (a
        process about to exit need not wait for it)."""
        self._closed = True
        self.kill_all()
        self._pool.close()
        self._reaper.close(wait=wait)
        self._cgroups.close()
        self._orphans.close()
        shutil.rmtree(self._out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._devnull)

    # ------------------------------------------------------------------ one attempt

    def _attempt(
        self, spec: models.TaskSpec, env: Mapping[str, str], sink: LogSink, stopper: Stopper
    ) -> tuple[Ending, dict[str, str]]:
        if self._closed:
            return _error("executor is closed"), {}
        if spec.workdir is not None and not os.path.isdir(spec.workdir):
            return _error(f"workdir not found: {spec.workdir}"), {}
        out_path = self._new_output_file()
        task_env = {**spec.env, **env, "RUNNER_OUTPUT": out_path}
        with self._lock:
            self._running.add(stopper)
        try:
            if spec.kind is models.Kind.CALL:
                ending, returned = self._pool.run(spec, env=task_env, sink=sink, stopper=stopper)
            else:
                ending, returned = self._run_process(spec, task_env, sink, stopper), None
        except BaseException:
            _unlink(out_path)
            raise
        finally:
            with self._lock:
                self._running.discard(stopper)
        return _with_outputs(ending, out_path, returned, sink)

    def _run_process(
        self, spec: models.TaskSpec, task_env: dict[str, str], sink: LogSink, stopper: Stopper
    ) -> Ending:
        argv = (
            [*spec.shell, spec.run or ""] if spec.kind is models.Kind.RUN else [*(spec.args or ())]
        )
        if not argv:
            return _error("no command to run")
        cgroup = self._cgroups.new()
        try:
            if cgroup is not None:
                wrapped = cgroup.wrap(argv)
                if wrapped[0] != argv[0]:  # the wrapper execs argv[0] later: check it now
                    _spawn.check_executable(argv[0], self._spawn_env.path(task_env))
                argv = wrapped
            with self._orphans.spawning() as known:
                proc = _spawn.start(
                    argv, env=self._spawn_env, extra=task_env, cwd=spec.workdir, stdin=self._devnull
                )
                known.add(proc.pid)
        except FileNotFoundError:
            return _not_started(sink, 127, f"command not found: {argv[0][:200]}", cgroup)
        except PermissionError:
            return _not_started(sink, 126, f"permission denied: {argv[0][:200]}", cgroup)
        except OSError as exc:
            return _error(f"cannot start {argv[0][:200]}: {exc}", cgroup)
        except ValueError as exc:  # a NUL byte or a bad variable name that got this far
            return _error(f"cannot start {argv[0][:200]!r}: {exc}", cgroup)
        stopper.pgid = proc.pid
        supervisor = Supervisor(
            proc,
            sink,
            stopper=stopper,
            grace=self._grace,
            on_start=self._reaper.register,
            on_exit=self._reaper.unregister,
            cgroup=cgroup,
        )
        try:
            return supervisor.run()
        finally:
            if cgroup is not None:
                self._cgroups.release(cgroup)
            self._orphans.forget(proc.pid)
            self._orphans.reap()  # what the cgroup's kill left as this process's zombies

    # ------------------------------------------------------------------ helpers

    def _secrets(self, spec: models.TaskSpec) -> tuple[dict[str, str], str | None]:
        """The attempt's secret env values, or why they cannot be read."""
        if not spec.secret_env:
            return {}, None
        try:
            return _secrets.resolve(spec.secret_env, self._secret_source), None
        except _secrets.SecretError as exc:
            return {}, str(exc)

    def _env_base(self) -> dict[str, str]:
        return self._base_env

    def _make_dir(self, path: str) -> None:
        if path not in self._dirs:
            private.make_folders(path)  # task output is for the owner only (docs/SECURITY.md)
            self._dirs.add(path)

    def _new_output_file(self) -> str:
        # A fresh name in a private (0700) folder; the task creates the file when it writes.
        return os.path.join(self._out_dir, f"{next(self._counter)}.env")


def _error(message: str, cgroup: _contain.Cgroup | None = None) -> Ending:
    if cgroup is not None:
        cgroup.remove()
    return Ending(exit_code=None, reason=models.Reason.ERROR, error=message)


def _not_started(
    sink: LogSink, code: int, message: str, cgroup: _contain.Cgroup | None = None
) -> Ending:
    if cgroup is not None:
        cgroup.remove()
    sink.note(message)
    return Ending(exit_code=code, reason=models.Reason.EXIT, error=message)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _with_outputs(
    ending: Ending, path: str, returned: dict[str, str] | None, sink: LogSink
) -> tuple[Ending, dict[str, str]]:
    """Read RUNNER_OUTPUT (plus what a call returned), then remove it; too much output is an
    error."""
    data = b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # most tasks never create it: nothing to read or remove
        fd = -2
    except OSError as exc:  # the task replaced it with something unreadable
        sink.note(f"cannot read RUNNER_OUTPUT: {exc}")
        fd = -1
    if fd >= 0:
        try:
            with open(fd, "rb") as f:
                data = f.read(MAX_OUTPUTS + 1)
        except OSError as exc:  # e.g. a folder
            sink.note(f"cannot read RUNNER_OUTPUT: {exc}")
            data = b""
    if fd != -2:
        _unlink(path)
    outputs, problems = parse_outputs(data[:MAX_OUTPUTS])
    for problem in problems:
        sink.note(problem)
    outputs.update(returned or {})
    message = _outputs_problem(outputs, len(data))
    if message is not None and ending.reason is models.Reason.EXIT:
        sink.note(message)
        ending = Ending(exit_code=ending.exit_code, reason=models.Reason.ERROR, error=message)
    return ending, outputs


def _outputs_problem(outputs: dict[str, str], size: int) -> str | None:
    """Why these outputs fail the attempt: too large, or a NUL byte, which no argument or
    environment variable of a dependent task could carry."""
    if size > MAX_OUTPUTS:
        return f"RUNNER_OUTPUT is larger than {MAX_OUTPUTS} bytes"
    for key, value in outputs.items():
        if "\0" in key or "\0" in value:
            name = key.replace("\0", "\\0")[:60]
            return f"output {name!r} holds a NUL byte, which no task can be given; remove it"
    return None
