"""Executor against real processes: run/args kinds, env, outputs, logs, timeouts, no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner import models
from runner.executor import MAX_OUTPUTS, ExecResult, Executor, _spawn, parse_outputs
from runner.executor._proc import kill_group

ENV = {"RUNNER_RUN_ID": "r1", "RUNNER_TASK_ID": "t", "RUNNER_ATTEMPT": "1"}
REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition with a deadline (an event wait, not a sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def when_exists(path: Path, action: Callable[[], object]) -> None:
    """In a thread: wait for `path` to appear, then run `action`."""

    def wait_then_act() -> None:
        wait_until(path.exists)
        action()

    threading.Thread(target=wait_then_act, daemon=True).start()


def _live(stat_path: str) -> tuple[int, str] | None:
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[2]), fields[0]  # pgrp, state


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _live(f"/proc/{name}/stat")
            if info is not None and info[0] == pgid and info[1] != "Z":
                members.append(int(name))
    return members


def assert_group_gone(pgid: int) -> None:
    """Every process of the group has been SIGKILLed; dying is asynchronous, so wait (<= 5 s)."""
    wait_until(lambda: group_members(pgid) == [], timeout=5)


def pid_alive(pid: int) -> bool:
    info = _live(f"/proc/{pid}/stat")
    return info is not None and info[1] != "Z"


def task(**kw: object) -> models.TaskSpec:
    kind = (
        models.Kind.CALL if "call" in kw else models.Kind.ARGS if "args" in kw else models.Kind.RUN
    )
    return models.TaskSpec(id="t", name="t", kind=kind, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["fork_exec", "popen"])
def executor(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Executor]:
    """An executor that starts processes with CPython's fork_exec directly, or (as on the
    Python versions where runner does not call it) with subprocess.Popen."""
    if request.param == "popen":
        monkeypatch.setattr(_spawn, "FORK_EXEC", False)
    elif not _spawn.FORK_EXEC:
        pytest.skip("this Python's fork_exec is not called directly")
    ex = Executor(slots=2, log_dir=str(tmp_path / "logs"), log_limit=4096, grace=1.0)
    yield ex
    ex.close()


def run(ex: Executor, spec: models.TaskSpec, cancel: threading.Event | None = None) -> ExecResult:
    return ex.run(spec, env=ENV, log_name="r1/t/1", cancel=cancel or threading.Event())


def test_executor_run_exit_code_output_and_log(executor: Executor) -> None:
    spec = task(
        run='echo "hello $RUNNER_RUN_ID"; echo oops >&2; echo k=v >> "$RUNNER_OUTPUT"; exit 3'
    )
    result = run(executor, spec)
    assert (result.exit_code, result.reason, result.error) == (3, models.Reason.EXIT, "exit code 3")
    assert result.outputs == {"k": "v"}
    assert "hello r1\n" in result.log_tail
    assert "oops\n" in result.log_tail
    assert executor.log_path("r1/t/1").read_text() == result.log_tail


def test_executor_args_exec_without_shell(executor: Executor) -> None:
    result = run(executor, task(args=("echo", "$HOME; rm -rf x", "*")))
    assert result.succeeded
    assert result.log_tail.split(" ", 1)[1] == "$HOME; rm -rf x *\n"


def test_executor_args_missing_command_exits_127(executor: Executor) -> None:
    result = run(executor, task(args=("no-such-command-xyz", "a")))
    assert (result.exit_code, result.reason) == (127, models.Reason.EXIT)
    assert result.error == "command not found: no-such-command-xyz"
    assert "command not found: no-such-command-xyz" in executor.log_path("r1/t/1").read_text()


def test_executor_run_missing_command_exits_127(executor: Executor) -> None:
    result = run(executor, task(run="no-such-command-xyz"))
    assert (result.exit_code, result.reason) == (127, models.Reason.EXIT)


def test_executor_workdir_relative_and_missing(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    result = run(executor, task(run="pwd", workdir="sub"))
    assert result.log_tail.rstrip().endswith(str(tmp_path / "sub"))
    missing = run(executor, task(run="true", workdir="nope"))
    assert (missing.reason, missing.error) == (models.Reason.ERROR, "workdir not found: nope")


def test_executor_env_layers(executor: Executor) -> None:
    spec = task(
        args=("sh", "-c", 'echo "$A $RUNNER_TASK_ID $RUNNER_OUTPUT $PATH"'),
        env={"A": "from-spec", "RUNNER_TASK_ID": "spoofed"},
    )
    words = run(executor, spec).log_tail.split()[1:]
    assert words[:2] == ["from-spec", "t"]
    assert words[2].endswith(".env")
    assert words[3] == os.environ["PATH"]


def test_executor_env_override_of_an_inherited_variable_is_the_only_one(
    executor: Executor, tmp_path: Path
) -> None:
    """A task's env over the worker's: one HOME, the task's; PATH from the task finds its
    commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "only-in-task-path"
    tool.write_text("#!/bin/sh\necho found-it\n")
    tool.chmod(0o755)
    spec = task(
        run='env | grep -c "^HOME="; echo "home=$HOME"; only-in-task-path',
        env={"HOME": "/task-home", "PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    result = run(executor, spec)
    assert result.succeeded, result.log_tail
    lines = [line.split(" ", 1)[1] for line in result.log_tail.splitlines()]
    assert lines == ["1", "home=/task-home", "found-it"]
    by_name = run(executor, task(args=("only-in-task-path",), env=spec.env))
    assert by_name.succeeded
    assert by_name.log_tail.endswith("found-it\n")


def test_executor_not_executable_exits_126(executor: Executor, tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("echo never\n")
    result = run(executor, task(args=(str(script),)))
    assert (result.exit_code, result.reason) == (126, models.Reason.EXIT)
    assert result.error == f"permission denied: {script}"


def test_executor_task_gets_no_descriptor_of_the_worker(executor: Executor) -> None:
    """Even one the worker made inheritable: a task has its three standard streams only."""
    read, write = os.pipe()
    leaked = os.dup2(write, 100, inheritable=True)
    try:
        result = run(executor, task(args=("ls", "/proc/self/fd")))
    finally:
        for fd in (read, write, leaked):
            os.close(fd)
    fds = {int(line.split(" ", 1)[1]) for line in result.log_tail.splitlines()}
    assert leaked not in fds
    assert fds <= {0, 1, 2, 3}  # 3: the folder ls is reading


def test_executor_outputs_parse_skips_comments_and_reports_bad_lines() -> None:
    outputs, problems = parse_outputs(b"# c\n\na=1\nb = x=y\r\nnoequals\n")
    assert outputs == {"a": "1", "b": " x=y"}
    assert problems == ["RUNNER_OUTPUT line 5: expected key=value, got 'noequals'"]


def test_executor_outputs_too_large_is_error(executor: Executor) -> None:
    size = MAX_OUTPUTS + 10
    result = run(executor, task(run=f'head -c {size} /dev/zero | tr "\\0" a > "$RUNNER_OUTPUT"'))
    assert result.reason is models.Reason.ERROR
    assert result.error == f"RUNNER_OUTPUT is larger than {MAX_OUTPUTS} bytes"


@pytest.mark.parametrize(
    "spec",
    [
        task(run="printf 'ok=1\\nbad=a\\000b\\n' > \"$RUNNER_OUTPUT\""),
        task(call="tests.callables:ok", with_={"bad": "a\0b"}),
    ],
)
def test_executor_output_with_nul_fails_the_producing_task(
    executor: Executor, spec: models.TaskSpec
) -> None:
    result = run(executor, spec)
    assert result.reason is models.Reason.ERROR
    assert result.error == "output 'bad' holds a NUL byte, which no task can be given; remove it"


def test_executor_nul_in_an_argument_is_an_error_not_a_crash(executor: Executor) -> None:
    for spec in (task(args=["echo", "a\0b"]), task(args=["echo"], env={"K": "a\0"})):
        result = run(executor, spec)
        assert result.reason is models.Reason.ERROR
        assert result.error is not None
        assert "null byte" in result.error


def test_executor_outputs_file_removed_after_attempt(executor: Executor) -> None:
    result = run(executor, task(run='echo "path=$RUNNER_OUTPUT" >> "$RUNNER_OUTPUT"'))
    assert not Path(result.outputs["path"]).exists()


def test_executor_log_partial_lines_and_binary(executor: Executor) -> None:
    result = run(executor, task(run="printf 'a\\nb'; printf '\\377\\376'; printf 'c\\n'"))
    lines = result.log_tail.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b\ufffd\ufffdc"]
    assert all(line[:4].isdigit() and line[23:25] == "Z " for line in lines)


def test_executor_log_huge_output_keeps_head_and_tail_bounded(tmp_path: Path) -> None:
    """The local file keeps the first and the last RUNNER_LOG_LIMIT bytes and says what was cut
    (it grew with the output before: 375 MB for a task printing 300 MB)."""
    ex = Executor(slots=1, log_dir=str(tmp_path), log_limit=1000)
    try:
        size = 50 * 1024 * 1024
        result = run(ex, task(run=f"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {size}"))
    finally:
        ex.close()
    assert result.succeeded
    assert len(result.log_tail.encode()) == 1000
    data = ex.log_path("r1/t/1").read_bytes()
    head, marker, tail = data[:1000], data[1000:].split(b"\n", 2)[1], data[1000:].split(b"\n", 2)[2]
    assert head.split(b" ", 1)[1].startswith(b"0123456789abcdefghijklmnopqrstuvwxyz\n")
    assert tail.decode() == result.log_tail
    cut = int(marker.split()[1])
    assert marker == f"[runner] {cut} bytes of output cut here (RUNNER_LOG_LIMIT=1000)".encode()
    assert cut > size  # the timestamps count too
    assert len(data) < 2000 + 100


def test_executor_log_short_output_is_whole(executor: Executor) -> None:
    result = run(executor, task(run="seq 1 100"))
    data = executor.log_path("r1/t/1").read_text()
    assert "cut here" not in data
    assert [line.split(" ", 1)[1] for line in data.splitlines()] == [str(i) for i in range(1, 101)]
    assert result.log_tail == data


SPAWNER = """
sleep 1000 &
sh -c 'sleep 1000 & sleep 1000' &
echo $$ > {ready}.tmp && mv {ready}.tmp {ready}
{trap}
sleep 1000
"""


def _spawner(tmp_path: Path, trap: str = "") -> tuple[str, Path]:
    ready = tmp_path / "ready"
    return SPAWNER.format(ready=ready, trap=trap), ready


def test_executor_timeout_kills_whole_group(executor: Executor, tmp_path: Path) -> None:
    script, ready = _spawner(tmp_path)
    result = run(executor, task(run=script, timeout=0.5))
    assert (result.reason, result.error) == (models.Reason.TIMEOUT, "timed out after 0.5s")
    assert_group_gone(int(ready.read_text()))


def test_executor_timeout_sigkill_after_grace(tmp_path: Path) -> None:
    ex = Executor(slots=1, log_dir=str(tmp_path), log_limit=4096, grace=0.2)
    script, ready = _spawner(tmp_path, trap="trap '' TERM")
    try:
        result = run(ex, task(run=script, timeout=0.3))
    finally:
        ex.close()
    assert result.reason is models.Reason.TIMEOUT
    assert "SIGKILL" in result.log_tail
    assert_group_gone(int(ready.read_text()))


def test_executor_cancel_kills_group(executor: Executor, tmp_path: Path) -> None:
    script, ready = _spawner(tmp_path)
    cancel = threading.Event()
    when_exists(ready, cancel.set)
    result = run(executor, task(run=script), cancel)
    assert (result.reason, result.error) == (models.Reason.CANCELLED, "cancelled")
    assert_group_gone(int(ready.read_text()))


def test_executor_kill_all_stops_running_attempts(executor: Executor, tmp_path: Path) -> None:
    script, ready = _spawner(tmp_path)
    when_exists(ready, executor.kill_all)
    result = run(executor, task(run=script))
    assert result.reason is models.Reason.CANCELLED
    assert_group_gone(int(ready.read_text()))


def test_executor_exit_kills_leftover_background(executor: Executor, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg"
    result = run(executor, task(run=f"sleep 1000 & echo $! > {pid_file}; exit 0"))
    assert result.succeeded
    wait_until(lambda: not pid_alive(int(pid_file.read_text())), timeout=5)


WORKER = """
import sys, threading
from runner import models
from runner.executor import Executor
from runner.failpoints import Failpoints
ex = Executor(slots=1, log_dir=sys.argv[1], log_limit=1000,
              failpoints=Failpoints(sys.argv[5] if len(sys.argv) > 5 else ""))
spec = models.TaskSpec(id="t", name="t", kind=models.Kind(sys.argv[2]), run=sys.argv[3],
                       call=sys.argv[3], with_={{"ready": sys.argv[4]}})
ex.run(spec, env={{}}, log_name="x", cancel=threading.Event())
"""


@pytest.mark.parametrize(
    ("registered", "failpoints"),
    [(True, ""), (False, ""), (True, "reaper.shutdown=kill(TERM)")],
    ids=["registered", "tag-sweep", "signal-in-shutdown"],
)
def test_executor_worker_kill9_leaves_no_task(
    tmp_path: Path, registered: bool, failpoints: str
) -> None:
    """kill -9 of the worker ends its task; with the failpoint, the reaper's parent-death
    SIGTERM lands exactly inside its shutdown, after EOF (the "undead task" race)."""
    ready, escaped = tmp_path / "ready", tmp_path / "escaped"
    script = (
        f"setsid sh -c 'echo $$ > {escaped}; exec sleep 1000' & "
        f"sleep 1000 & {'sleep 0.3; ' if registered else ''}"
        f"echo $$ > {ready}.tmp && mv {ready}.tmp {ready}; sleep 1000"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(), str(tmp_path), "run", script, "", failpoints],
        cwd=REPO,
    )
    try:
        wait_until(lambda: ready.exists() and escaped.exists())
        pgid = int(ready.read_text())
        assert group_members(pgid)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    try:
        wait_until(lambda: group_members(pgid) == [] and not pid_alive(int(escaped.read_text())))
    finally:  # on failure, end what this test started (its group and the escaped process)
        kill_group(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(int(escaped.read_text()), signal.SIGKILL)


def test_executor_worker_kill9_leaves_no_call_child(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER.format(),
            str(tmp_path),
            "call",
            "tests.callables:slow",
            str(ready),
        ],
        cwd=REPO,
    )
    try:  # `slow` creates the file, then writes its pid: wait for the pid
        wait_until(lambda: ready.exists() and ready.read_text() != "")
        child = int(ready.read_text())
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    wait_until(lambda: not pid_alive(child))


def test_executor_log_path_rejects_escape(executor: Executor) -> None:
    with pytest.raises(ValueError, match="relative path"):
        executor.log_path("../x")
    assert executor.log_path("a/b").name == "b.log"


def test_executor_reaper_closes_with_executor(tmp_path: Path) -> None:
    ex = Executor(slots=1, log_dir=str(tmp_path), log_limit=10)
    reaper = ex._reaper._proc
    assert reaper is not None
    ex.close()
    assert reaper.poll() is not None


def test_executor_many_short_tasks_in_parallel(executor: Executor) -> None:
    results: list[ExecResult] = []
    lock = threading.Lock()

    def slot(i: int) -> None:
        for j in range(25):
            spec = task(run=f'echo n={i}-{j} >> "$RUNNER_OUTPUT"')
            r = executor.run(spec, env=ENV, log_name=f"p/{i}-{j}", cancel=threading.Event())
            with lock:
                results.append(r)

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.outputs["n"] for r in results) == sorted(
        f"{i}-{j}" for i in range(4) for j in range(25)
    )


def test_executor_reaper_enforces_the_fencing_deadline(executor: Executor, tmp_path: Path) -> None:
    """The reaper kills running attempts when the worker's deadline passes, without the worker
    doing anything (as when it is SIGSTOPped), then keeps serving later attempts."""
    script, ready = _spawner(tmp_path)
    # registered with the reaper once it has run a little; the deadline is set after that
    when_exists(ready, lambda: executor.set_deadline(time.monotonic() + 0.3))
    result = run(executor, task(run=script))
    assert result.reason is models.Reason.EXIT
    assert result.exit_code is not None
    assert result.exit_code < 0  # killed by a signal, not by the executor's own timeout
    assert_group_gone(int(ready.read_text()))
    executor.set_deadline(time.monotonic() + 60)
    assert run(executor, task(run="echo again")).exit_code == 0
    executor.set_deadline(None)
