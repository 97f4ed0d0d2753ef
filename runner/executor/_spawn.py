"""Start an attempt's leader process: CPython's own fork+exec, without `subprocess.Popen`'s setup.

`subprocess.Popen(...)` cost the worker ~190 us of CPU per task (with a 48-variable
environment), under the GIL the slot threads share: one `os.fsencode` call per environment key
and per value, the env list built again, two pipes, file objects, an ExitStack. The spawn it
wraps, `_posixsubprocess.fork_exec` (vfork, then exec; the child closes every other descriptor),
takes ~55 us. On the CPython versions whose argument list for it we know (3.11 to 3.13,
`Lib/subprocess.py`), `start` calls it directly, the base environment encoded once per executor;
anywhere else it uses Popen, with the same results (the executor tests run both ways).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

_fork_exec: Any  # typeshed's stub says `cwd: str` and a callable preexec_fn; None is what
try:  # subprocess.py passes for either
    from _posixsubprocess import fork_exec as _fork_exec
except ImportError:  # not POSIX CPython
    _fork_exec = None

# fork_exec's positional arguments are an implementation detail of CPython: use it only where
# they are the ones written out in `_fork_exec_direct` (checked against Lib/subprocess.py).
FORK_EXEC = (
    _fork_exec is not None
    and sys.implementation.name == "cpython"
    and (3, 11) <= sys.version_info[:2] <= (3, 13)
)


# What os.fsencode does to a str, without its checks (an attempt encodes ~15 strings).
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_NAMES_KEPT = 1024  # encoded variable names an Env keeps (the RUNNER_* ones, spec.env's)


class Env:
    """The environment tasks start from, encoded once; `entries` adds an attempt's variables."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self._base = {os.fsencode(k): os.fsencode(v) for k, v in base.items()}
        self._list = [k + b"=" + v for k, v in self._base.items()]
        self._names: dict[str, bytes] = {}  # checked and encoded

    def entries(self, extra: Mapping[str, str]) -> tuple[list[bytes], bytes | None]:
        """The `KEY=value` list of the base with `extra` over it, and the PATH in force."""
        enc: dict[bytes, bytes] = {}
        names = self._names
        for key, value in extra.items():
            k = names.get(key)
            if k is None:
                k = os.fsencode(key)
                if b"=" in k or not k:
                    raise ValueError(f"illegal environment variable name: {key!r}")
                if len(names) < _NAMES_KEPT:
                    names[key] = k
            enc[k] = value.encode(_FS_ENCODING, _FS_ERRORS)
        if enc.keys() & self._base.keys():  # the attempt overrides an inherited variable
            merged = {**self._base, **enc}
            return [k + b"=" + v for k, v in merged.items()], merged.get(b"PATH")
        listed = self._list + [k + b"=" + v for k, v in enc.items()]
        return listed, self._base.get(b"PATH")

    def path(self, extra: Mapping[str, str]) -> str:
        """The PATH an attempt with `extra` over the base environment runs with."""
        if "PATH" in extra:
            return extra["PATH"]
        base = self._base.get(b"PATH")
        return os.defpath if base is None else os.fsdecode(base)

    def mapping(self, extra: Mapping[str, str]) -> dict[bytes, bytes]:
        """The same environment as a mapping (for Popen)."""
        return {**self._base, **{os.fsencode(k): os.fsencode(v) for k, v in extra.items()}}


class Child:
    """A started attempt's leader process: its pid (its process group id too), the read end
    of its output pipe, and `wait` for its return code (negative: killed by that signal)."""

    def __init__(self, pid: int, out: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.out = out
        self._popen = popen

    def wait(self) -> int:
        if self._popen is not None:
            return self._popen.wait()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def close_out(self) -> None:
        if self._popen is not None and self._popen.stdout is not None:
            self._popen.stdout.close()
        else:
            os.close(self.out)


def check_executable(name: str, path: str) -> None:
    """Raise what exec would (FileNotFoundError, PermissionError) if `name` cannot be run with
    this PATH: for a leader started through a wrapper, whose exec happens later."""
    if os.path.dirname(name):
        candidates = [name]
    else:
        candidates = [os.path.join(folder or ".", name) for folder in path.split(":")]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise FileNotFoundError(2, "No such file or directory", name)
    if not any(os.access(c, os.X_OK) for c in found):
        raise PermissionError(13, "Permission denied", name)


def start(
    argv: Sequence[str], *, env: Env, extra: Mapping[str, str], cwd: str | None, stdin: int
) -> Child:
    """Start `argv` in a new session (its pid is its process group id) with the environment
    `env` + `extra`, in `cwd`, stdout and stderr sharing one pipe, `stdin` an open descriptor.
    A failed exec or chdir raises OSError (FileNotFoundError, PermissionError...) as Popen does.
    """
    if not FORK_EXEC:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
            env=env.mapping(extra),
            cwd=cwd,
        )
        assert proc.stdout is not None
        return Child(proc.pid, proc.stdout.fileno(), proc)
    entries, path = env.entries(extra)
    return _fork_exec_direct(argv, entries, path, cwd=cwd, stdin=stdin)


def _fork_exec_direct(
    argv: Sequence[str], entries: list[bytes], path: bytes | None, *, cwd: str | None, stdin: int
) -> Child:
    """What Popen._execute_child does for these arguments, without its bookkeeping."""
    assert _fork_exec is not None
    args = [a.encode(_FS_ENCODING, _FS_ERRORS) for a in argv]
    exe = args[0]
    if os.path.dirname(exe):
        executables: tuple[bytes, ...] = (exe,)
    else:  # as os.get_exec_path: the attempt's PATH, else the default
        folders = (path if path is not None else os.defpath.encode()).split(b":")
        executables = tuple(os.path.join(folder, exe) for folder in folders)
    read, write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        try:
            pid = _fork_exec(
                args,
                executables,
                True,
                (err_write,),  # close_fds, except the error pipe
                cwd,
                entries,
                stdin,
                -1,
                read,
                write,
                -1,
                write,  # p2cread/write, c2pread/write, errread/write
                err_read,
                err_write,
                True,
                True,
                -1,  # restore_signals, start_new_session, process_group
                None,
                None,
                None,
                -1,  # gid, extra groups, uid, umask
                None,
                True,  # preexec_fn, allow_vfork
            )
        finally:
            os.close(err_write)
            os.close(write)
        report = _read_all(err_read)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(err_read)
    if report:  # the child could not exec (or chdir): reap it and raise as Popen does
        os.waitpid(pid, 0)
        os.close(read)
        raise _child_error(report, cwd=cwd, executable=argv[0])
    return Child(pid, read)


def _read_all(fd: int) -> bytes:
    data = b""
    while part := os.read(fd, 50000):
        data += part
        if len(data) > 50000:
            break
    return data


def _child_error(report: bytes, *, cwd: str | None, executable: str) -> Exception:
    """The exception a child's `Type:hex errno:message` report stands for."""
    try:
        name, hex_errno, message = report.split(b":", 2)
        number = int(hex_errno, 16)
    except ValueError:
        return subprocess.SubprocessError(f"bad exception data from child: {report!r}")
    if name == b"OSError" and number:
        filename = cwd if message == b"noexec" else executable  # "noexec": chdir failed
        return OSError(number, os.strerror(number), filename)
    return subprocess.SubprocessError(message.decode(errors="replace"))
