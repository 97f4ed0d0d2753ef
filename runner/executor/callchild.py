"""A long-lived call child: imports `module:function` targets once and runs them on request.

Started by the call pool as a plain script (`python callchild.py PARENT_PID REQ_FD RESP_FD
CWD`), so it imports only the standard library. Requests arrive as length-prefixed pickles
`(target, kwargs, env, workdir)` on REQ_FD; each answer is one pickle on RESP_FD:
`("ok", outputs | None)`, `("exit", code, message)` or `("error", message)`. Whatever the
callable prints goes to fds 1 and 2, which the pool streams into the attempt's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1
_SCALARS = (str, int, float, bool)
MAX_OUTPUTS = 64 * 1024


class TargetNotFound(Exception):
    """The `module:function` target cannot be imported."""


def read_exact(fd: int, size: int) -> bytes:
    """Read `size` bytes, or fewer only at EOF."""
    parts = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def write_frame(fd: int, payload: bytes) -> None:
    """Write one length-prefixed frame."""
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def read_frame(fd: int) -> bytes | None:
    """Read one length-prefixed frame; None at EOF."""
    header = read_exact(fd, _HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    return read_exact(fd, size)


class _Targets:
    """`module:function` strings resolved once per child."""

    def __init__(self) -> None:
        self._cache: dict[str, Callable[..., Any]] = {}

    def get(self, target: str) -> Callable[..., Any]:
        func = self._cache.get(target)
        if func is None:
            module_name, _, attr = target.partition(":")
            try:
                func = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise TargetNotFound(f"callable not found: {target} ({exc})") from exc
            if not callable(func):
                raise TargetNotFound(f"callable not found: {target} is not callable")
            self._cache[target] = func
        return func


@contextlib.contextmanager
def _environment(env: Mapping[str, str], workdir: str | None) -> Iterator[None]:
    """Set env vars (and the working directory, first on the import path, so a `call:`
    module next to the workflow file is found) for one call, then put them back."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    cwd = os.getcwd() if workdir else None
    try:
        if workdir:
            os.chdir(workdir)
            sys.path.insert(0, os.getcwd())
        yield
    finally:
        if cwd is not None:
            sys.path.remove(os.getcwd())
            os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def to_outputs(value: object) -> tuple[str, Any]:
    """The answer for a callable's return value: a dict of scalars or None, else an error."""
    if value is None:
        return ("ok", None)
    if not isinstance(value, dict):
        return ("error", f"call returned {type(value).__name__}; expected a dict or None")
    outputs: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, _SCALARS):
            return ("error", f"call returned a non-scalar output {key!r}: {type(item).__name__}")
        outputs[key] = str(item)
    if sum(len(k) + len(v) for k, v in outputs.items()) > MAX_OUTPUTS:
        return ("error", f"call outputs exceed {MAX_OUTPUTS} bytes")
    return ("ok", outputs)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def call(
    targets: _Targets, request: tuple[str, dict[str, Any], dict[str, str], str | None]
) -> tuple[Any, ...]:
    """Run one request and return its answer; a failure's traceback goes to stderr."""
    target, kwargs, env, workdir = request
    try:
        with _environment(env, workdir):
            func = targets.get(target)
            return to_outputs(func(**kwargs))
    except TargetNotFound as exc:
        print(f"[runner] {exc}", file=sys.stderr)
        return ("exit", 127, str(exc))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return ("ok", None) if code == 0 else ("exit", code, f"exit code {code}")
    except BaseException as exc:
        # Skip this module's own frame: the log shows the callable's traceback only.
        traceback.print_exception(type(exc), exc, exc.__traceback__ and exc.__traceback__.tb_next)
        return ("exit", 1, _one_line(exc))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


def _watch_parent(parent_pid: int) -> None:
    """Die with the worker: PR_SET_PDEATHSIG (also sent when the spawning *thread* exits, so
    the handler checks that the parent really changed)."""

    def on_signal(_signum: int, _frame: object) -> None:
        if os.getppid() != parent_pid:
            os._exit(137)

    signal.signal(signal.SIGUSR2, on_signal)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGUSR2)
    if os.getppid() != parent_pid:
        os._exit(137)


def main(argv: list[str]) -> int:
    """Serve requests until the pool closes the request pipe."""
    parent_pid, req_fd, resp_fd, cwd = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    _watch_parent(parent_pid)
    sys.path[0] = cwd  # the worker's directory, not this file's
    targets = _Targets()
    while (frame := read_frame(req_fd)) is not None:
        answer = call(targets, pickle.loads(frame))
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            payload = pickle.dumps(("error", f"cannot send the result: {exc}"))
        write_frame(resp_fd, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
