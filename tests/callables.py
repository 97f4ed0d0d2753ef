"""Callables for `call:` tasks in tests and benchmarks (imported by executor call children)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def noop() -> None:
    """Return at once, no outputs."""


def ok(**kwargs: object) -> dict[str, object]:
    """Echo the keyword arguments back as outputs."""
    return dict(kwargs)


def fail(message: str = "boom") -> None:
    """Raise, to fail the attempt with a traceback."""
    raise ValueError(message)


def crash(code: int = 3) -> None:
    """End the child process abruptly, as a segfault would."""
    os._exit(code)


def slow(ready: str, seconds: float = 1000.0) -> None:
    """Write `ready`, then sleep."""
    Path(ready).write_text(str(os.getpid()))
    time.sleep(seconds)


def say(text: str, err: str = "") -> None:
    """Print to stdout (and stderr)."""
    print(text)
    if err:
        print(err, file=sys.stderr)


def env(names: list[str]) -> dict[str, str]:
    """Return the given environment variables as outputs."""
    return {name: os.environ.get(name, "<unset>") for name in names}


def bad_return() -> list[int]:
    """Return something that is not a dict of scalars."""
    return [1, 2]


def pid() -> dict[str, int]:
    """The child's pid."""
    return {"pid": os.getpid()}


def escape_then_sleep(pid_file: str, seconds: float = 1000.0) -> None:
    """Start a process that leaves the call child's session with a cleared environment and
    ignores SIGTERM (it writes its pid to `pid_file`), then sleep."""
    inner = f"trap '' TERM; echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 1000"
    subprocess.Popen(["setsid", "/bin/sh", "-c", inner], env={}, start_new_session=True)
    deadline = time.monotonic() + 10
    while not Path(pid_file).exists() and time.monotonic() < deadline:  # started for sure
        time.sleep(0.01)
    time.sleep(seconds)
