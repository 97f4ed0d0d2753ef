"""Hooks delivered for real (docs/HOOKS.md): a local HTTP receiver on 127.0.0.1 gets exactly one
POST per run end through a kill -9 of the leading scheduler (failpoint `hook.before_send`:
after the delivery is claimed, before it is sent) on both stores; a command hook reads the
run's JSON on stdin and RUNNER_* in its environment; a failing hook retries with backoff, shows
in `get run` and never changes the run's exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner import engine, workflow
from runner.models import HookState
from runner.store import Store, open_store
from tests.e2e.helpers import Cli, wait_for
from tests.integration.hookreceiver import receiver

WEBHOOK = """\
apiVersion: runner/v1
kind: Workflow
metadata: {{name: hooked}}
spec:
  hooks:
    - on: [cancelled]
      webhook:
        url: {url}
        headers: {{Authorization: {{fromEnv: HOOK_TOKEN}}}}
  tasks:
    - name: never
      run: "true"
"""


def _leader_pid(store: Store) -> int:
    found: list[int] = []

    def elected() -> bool:
        leader = store.leader(now=time.time())
        found[:] = [] if leader is None else [int(leader.rsplit("-", 2)[1])]
        return bool(found)

    wait_for(elected, timeout=20, what="a leading scheduler")
    return found[0]


def _hook_state(store: Store, run_id: str) -> tuple[HookState, int]:
    (status,) = store.get_run(run_id).hooks
    return status.state, status.attempts


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exactly_once_through_a_leader_kill(tmp_path: Path, url: str) -> None:
    store = open_store(url)
    cli = Cli(tmp_path, store=url)
    env = {"RUNNER_HOOK_LEASE": "2", "HOOK_TOKEN": "Bearer s3cret"}
    crash = {**env, "RUNNER_FAILPOINTS": "hook.before_send=crash"}
    first = second = None
    try:
        with receiver() as got:
            first = cli.start("scheduler", "--lease-ttl", "1", env=crash)
            assert _leader_pid(store) == first.pid
            plan = workflow.plan(workflow.loads(WEBHOOK.format(url=got.url)))
            run = engine.submit(store, plan, now=time.time())
            store.cancel_run(run.id, now=time.time())  # ends before any task started
            assert first.wait(timeout=30) == -signal.SIGKILL  # claimed it, died before sending
            assert _hook_state(store, run.id) == (HookState.DELIVERING, 1)
            second = cli.start("scheduler", "--lease-ttl", "1", env=env)
            wait_for(
                lambda: _hook_state(store, run.id)[0] is HookState.DELIVERED,
                timeout=30,
                what="the delivery taken over by the new leader",
            )
            _stop(second)
            assert got.count() == 1
            post = got.posts[0]
            assert post.headers["Runner-Delivery"] == f"{run.id}/0/1"
            assert post.headers["Authorization"] == "Bearer s3cret"
            assert (post.body["id"], post.body["state"]) == (run.id, "cancelled")
            assert _hook_state(store, run.id) == (HookState.DELIVERED, 2)
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)
        store.close()


@pytest.mark.timeout(90)
def test_one_post_through_a_leader_kill_sqlite(tmp_path: Path) -> None:
    _exactly_once_through_a_leader_kill(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")


@pytest.mark.timeout(90)
def test_one_post_through_a_leader_kill_etcd(tmp_path: Path, etcd_server: Any) -> None:
    _exactly_once_through_a_leader_kill(
        tmp_path, f"{etcd_server.url}/hooks-{uuid.uuid4().hex[:8]}/"
    )


COMMAND_AND_FAILING = """\
apiVersion: runner/v1
kind: Workflow
metadata: {{name: failing}}
spec:
  hooks:
    - on: [failure]
      run: cat > stdin.json; env | grep ^RUNNER_ | sort > env.txt
    - on: [always]
      retries: 2
      webhook: {{url: {url}}}
    - on: [success]
      run: touch never
  tasks:
    - name: ok
      run: "true"
    - name: bad
      run: exit 3
"""


@pytest.mark.timeout(90)
def test_apply_delivers_command_and_failing_hooks_and_keeps_its_exit_code(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path)
    cli.env["RUNNER_HOOK_RETRY_DELAY"] = "0.1"
    with receiver(fail=[500, 500, 500]) as got:
        (tmp_path / "wf.yaml").write_text(COMMAND_AND_FAILING.format(url=got.url))
        res = cli.run("apply", "wf.yaml", "--workers", "1")
        assert res.returncode == 1, res.stderr  # the run's failure, unchanged by its hooks
        assert got.count() == 3  # the first try and 2 retries
    stdin = json.loads((tmp_path / "stdin.json").read_text())
    run_id = stdin["id"]
    assert (stdin["state"], stdin["workflow"]) == ("failed", "failing")
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["RUNNER_RUN_ID"] == run_id
    assert env["RUNNER_RUN_STATE"] == "failed"
    assert env["RUNNER_FAILED_TASKS"] == "bad"
    assert env["RUNNER_HOOK_DELIVERY"] == f"{run_id}/0/1"
    assert not (tmp_path / "never").exists()
    shown = cli.get_run(run_id)["hooks"]
    assert [(h["index"], h["state"], h["attempts"]) for h in shown] == [
        (0, "delivered", 1),
        (1, "failed", 3),
    ]
    assert shown[1]["last_error"].startswith("HTTP 500")
    table = cli.run("get", "run", run_id)
    assert "HTTP 500" in table.stdout
    assert table.returncode == 0


@pytest.mark.timeout(90)
def test_a_leader_killed_after_sending_sends_again_with_the_same_key(tmp_path: Path) -> None:
    # at least once: the receiver got the POST but the dead leader could not record it
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    cli = Cli(tmp_path, store=url)
    env = {"RUNNER_HOOK_LEASE": "2", "HOOK_TOKEN": "t"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with receiver() as got:
            crash = {**env, "RUNNER_FAILPOINTS": "hook.after_send=crash"}
            procs.append(cli.start("scheduler", "--lease-ttl", "1", env=crash))
            assert _leader_pid(store) == procs[0].pid
            plan = workflow.plan(workflow.loads(WEBHOOK.format(url=got.url)))
            run = engine.submit(store, plan, now=time.time())
            store.cancel_run(run.id, now=time.time())
            assert procs[0].wait(timeout=30) == -signal.SIGKILL
            procs.append(cli.start("scheduler", "--lease-ttl", "1", env=env))
            wait_for(
                lambda: _hook_state(store, run.id)[0] is HookState.DELIVERED,
                timeout=30,
                what="the delivery sent again by the new leader",
            )
            _stop(procs[1])
            keys = [p.headers["Runner-Delivery"] for p in got.posts]
            assert keys == [f"{run.id}/0/1", f"{run.id}/0/1"]  # a receiver drops the repeat
    finally:
        for proc in procs:
            _stop(proc)
        store.close()


WORKER_COMMAND = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: by-worker}
spec:
  hooks:
    - on: [success]
      run: cat > "$OUT/stdin.json"; echo "$RUNNER_RUN_STATE" > "$OUT/state"
      env: {OUT: "%s"}
  tasks:
    - name: ok
      run: "true"
"""


@pytest.mark.timeout(90)
def test_a_worker_delivers_a_command_hook_on_etcd(tmp_path: Path, etcd_server: Any) -> None:
    cli = Cli(tmp_path, store=f"{etcd_server.url}/hooks-{uuid.uuid4().hex[:8]}/")
    (tmp_path / "wf.yaml").write_text(WORKER_COMMAND % tmp_path)
    worker = cli.start("worker", "--concurrency", "1")
    try:
        res = cli.run("apply", "wf.yaml")  # no local workers on etcd: the worker runs it all
        assert res.returncode == 0, res.stderr
        wait_for(lambda: (tmp_path / "state").exists(), timeout=30, what="the command hook")
        run_id = json.loads((tmp_path / "stdin.json").read_text())["id"]
        wait_for(
            lambda: cli.get_run(run_id)["hooks"][0]["state"] == "delivered",
            timeout=30,
            what="the delivery recorded",
        )
    finally:
        _stop(worker)
    assert (tmp_path / "state").read_text() == "succeeded\n"
