"""`call` tasks on the executor's pool of long-lived children."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import models
from runner.executor import ExecResult, Executor
from tests.unit.test_executor import ENV, REPO, pid_alive, wait_until, when_exists


def call(target: str, **with_: object) -> models.TaskSpec:
    timeout = with_.pop("_timeout", None)
    return models.TaskSpec(
        id="t",
        name="t",
        kind=models.Kind.CALL,
        call=f"tests.callables:{target}",
        with_=with_,
        timeout=timeout,  # type: ignore[arg-type]
    )


@pytest.fixture
def executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Executor]:
    monkeypatch.chdir(REPO)  # `tests.callables` is importable from the worker's directory
    ex = Executor(slots=2, log_dir=str(tmp_path / "logs"), log_limit=8192, grace=1.0)
    yield ex
    ex.close()


def run(ex: Executor, spec: models.TaskSpec, cancel: threading.Event | None = None) -> ExecResult:
    return ex.run(spec, env=ENV, log_name="r1/t/1", cancel=cancel or threading.Event())


def test_callpool_returned_dict_becomes_outputs(executor: Executor) -> None:
    result = run(executor, call("ok", a=1, b="x", c=True, d=1.5))
    assert result.succeeded
    assert result.outputs == {"a": "1", "b": "x", "c": "True", "d": "1.5"}


def test_callpool_none_means_no_outputs(executor: Executor) -> None:
    result = run(executor, call("noop"))
    assert (result.exit_code, result.reason, result.outputs) == (0, models.Reason.EXIT, {})


def test_callpool_bad_return_is_error(executor: Executor) -> None:
    result = run(executor, call("bad_return"))
    assert result.reason is models.Reason.ERROR
    assert result.error == "call returned list; expected a dict or None"


def test_callpool_exception_fails_with_traceback(executor: Executor) -> None:
    result = run(executor, call("fail", message="it broke"))
    assert (result.exit_code, result.reason) == (1, models.Reason.EXIT)
    assert result.error == "ValueError: it broke"
    assert "Traceback (most recent call last)" in result.log_tail
    assert "raise ValueError(message)" in result.log_tail
    assert "callchild.py" not in result.log_tail


def test_callpool_missing_target_exits_127(executor: Executor) -> None:
    result = run(executor, models.TaskSpec(id="t", name="t", kind=models.Kind.CALL, call="nope:x"))
    assert (result.exit_code, result.reason) == (127, models.Reason.EXIT)
    assert result.error is not None
    assert result.error.startswith("callable not found: nope:x")


def test_callpool_prints_go_to_log(executor: Executor) -> None:
    result = run(executor, call("say", text="to stdout", err="to stderr"))
    lines = [line.split(" ", 1)[1] for line in result.log_tail.splitlines()]
    assert lines == ["to stdout", "to stderr"]
    assert executor.log_path("r1/t/1").read_text() == result.log_tail


def test_callpool_env_visible_during_call_only(executor: Executor) -> None:
    names = ["RUNNER_RUN_ID", "RUNNER_TASK_ID", "FROM_SPEC", "RUNNER_OUTPUT"]
    spec = models.TaskSpec(
        id="t",
        name="t",
        kind=models.Kind.CALL,
        call="tests.callables:env",
        with_={"names": names},
        env={"FROM_SPEC": "yes"},
    )
    outputs = run(executor, spec).outputs
    assert outputs["RUNNER_RUN_ID"] == "r1"
    assert outputs["FROM_SPEC"] == "yes"
    assert outputs["RUNNER_OUTPUT"].endswith(".env")
    later = executor.run(
        call("env", names=["FROM_SPEC", "RUNNER_RUN_ID"]),
        env={},
        log_name="e",
        cancel=threading.Event(),
    )
    assert later.outputs == {"FROM_SPEC": "<unset>", "RUNNER_RUN_ID": "<unset>"}


def test_callpool_reuses_children(executor: Executor) -> None:
    pids = {run(executor, call("pid")).outputs["pid"] for _ in range(5)}
    assert len(pids) == 1


def test_callpool_crash_is_error_and_child_replaced(executor: Executor) -> None:
    before = run(executor, call("pid")).outputs["pid"]
    result = run(executor, call("crash", code=3))
    assert (result.reason, result.error) == (models.Reason.ERROR, "call child died: exit code 3")
    after = run(executor, call("pid")).outputs["pid"]
    assert after != before
    wait_until(lambda: not pid_alive(int(before)), timeout=5)


def test_callpool_timeout_kills_only_that_child(executor: Executor, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    result = run(executor, call("slow", ready=str(ready), _timeout=0.5))
    assert (result.reason, result.error) == (models.Reason.TIMEOUT, "timed out after 0.5s")
    wait_until(lambda: not pid_alive(int(ready.read_text())), timeout=5)
    assert run(executor, call("noop")).succeeded


def test_callpool_cancel_kills_child(executor: Executor, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cancel = threading.Event()
    when_exists(ready, cancel.set)
    result = run(executor, call("slow", ready=str(ready)), cancel)
    assert result.reason is models.Reason.CANCELLED
    wait_until(lambda: not pid_alive(int(ready.read_text())), timeout=5)


def test_callpool_kill_all_cancels_call(executor: Executor, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    when_exists(ready, executor.kill_all)
    result = run(executor, call("slow", ready=str(ready)))
    assert result.reason is models.Reason.CANCELLED


def test_callpool_module_in_worker_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodule_xyz.py").write_text("def fn(x):\n    return {'double': x * 2}\n")
    monkeypatch.chdir(tmp_path)
    ex = Executor(slots=1, log_dir=str(tmp_path / "logs"), log_limit=100)
    try:
        spec = models.TaskSpec(
            id="t", name="t", kind=models.Kind.CALL, call="mymodule_xyz:fn", with_={"x": 21}
        )
        assert run(ex, spec).outputs == {"double": "42"}
    finally:
        ex.close()
    assert os.getcwd() == str(tmp_path)


def _call_children() -> set[int]:
    """This process's children that are call children (by /proc/PID/stat's parent field)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and any(a.endswith(b"callchild.py") for a in argv):
            found.add(int(entry))
    return found


def test_warm_calls_starts_one_child_per_slot_ahead_and_calls_use_them(
    executor: Executor,
) -> None:
    before = _call_children()
    executor.warm_calls()
    warm = _call_children() - before
    assert len(warm) == 2
    assert {int(run(executor, call("pid")).outputs["pid"]) for _ in range(3)} <= warm
    assert _call_children() - before == warm  # no child was started for the calls
    executor.close()
    wait_until(lambda: not any(pid_alive(p) for p in warm))
