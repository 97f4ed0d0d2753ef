"""Sending one delivery: a webhook POST or a command, with the run's JSON as body or stdin."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.models import HookDelivery, HookSpec, Run, TaskState

DEFAULT_TIMEOUT = 30.0  # seconds a webhook or command may take when the hook sets none
ERROR_LIMIT = 300  # characters of a response body or stderr kept as `last_error`


@dataclass(frozen=True, slots=True, kw_only=True)
class HookEnv:
    """What a delivery may read from the deliverer's process: its environment (secrets named by
    `{fromEnv: NAME}`, the base environment of a command hook)."""

    environ: Mapping[str, str] = field(default_factory=dict)


class SendError(Exception):
    """This try failed; the message becomes the delivery's `last_error`."""


def failed_tasks(run: Run) -> list[str]:
    return [t.id for t in run.tasks if t.state is TaskState.FAILED]


def resolve_headers(headers: Mapping[str, object], env: HookEnv) -> dict[str, str]:
    """Header values with their secrets read now (`{fromEnv}` / `{fromFile}`); never stored."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, dict) and "fromEnv" in value:
            var = str(value["fromEnv"])
            if var not in env.environ:
                raise SendError(f"header {name}: environment variable {var} is not set")
            out[name] = env.environ[var]
        elif isinstance(value, dict) and "fromFile" in value:
            path = Path(str(value["fromFile"])).expanduser()
            try:
                out[name] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SendError(f"header {name}: cannot read {path}: {exc.strerror}") from None
    return out


def send(delivery: HookDelivery, run: Run, body: bytes, env: HookEnv) -> None:
    """One try; raises SendError with what went wrong."""
    if delivery.spec.url is not None:
        _post(delivery, run, body, env)
    else:
        _command(delivery, run, body, env)


def _post(delivery: HookDelivery, run: Run, body: bytes, env: HookEnv) -> None:
    import urllib.error  # only a process that sends a webhook needs it
    import urllib.request

    spec = delivery.spec
    assert spec.url is not None
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "runner-hooks",
        "Runner-Delivery": delivery.key,
        "Runner-Run-State": run.state.value,
        **resolve_headers(spec.headers, env),
    }
    request = urllib.request.Request(spec.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout or DEFAULT_TIMEOUT) as resp:
            resp.read(ERROR_LIMIT)
    except urllib.error.HTTPError as exc:
        text = exc.read(ERROR_LIMIT).decode("utf-8", "replace").strip()
        detail = f": {text}" if text else ""
        raise SendError(f"HTTP {exc.code} from {spec.url}{detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SendError(f"POST {spec.url}: {reason}") from None


def command_env(delivery: HookDelivery, run: Run, env: HookEnv) -> dict[str, str]:
    """The environment of a command hook: the deliverer's, the hook's `env`, then RUNNER_*."""
    return {
        **env.environ,
        **delivery.spec.env,
        "RUNNER_RUN_ID": run.id,
        "RUNNER_RUN_STATE": run.state.value,
        "RUNNER_FAILED_TASKS": ",".join(failed_tasks(run)),
        "RUNNER_HOOK_DELIVERY": delivery.key,
    }


def argv(spec: HookSpec) -> list[str]:
    if spec.args is not None:
        return list(spec.args)
    assert spec.run is not None
    return [*spec.shell, spec.run]


def _command(delivery: HookDelivery, run: Run, body: bytes, env: HookEnv) -> None:
    spec = delivery.spec
    timeout = spec.timeout or DEFAULT_TIMEOUT
    try:
        proc = subprocess.Popen(
            argv(spec),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=command_env(delivery, run, env),
            cwd=spec.workdir,
            start_new_session=True,  # its own process group, killed whole on timeout
        )
    except OSError as exc:
        raise SendError(f"cannot start {argv(spec)[0]}: {exc.strerror}") from None
    try:
        _, err = proc.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SendError(f"timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip()[-ERROR_LIMIT:]
        raise SendError(f"exit {proc.returncode}" + (f": {tail}" if tail else ""))
