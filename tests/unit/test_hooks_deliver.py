"""The Deliverer on a real SQLite store with a real local HTTP receiver: secrets read when sent,
errors kept as `last_error`, a claim past its lease sends nothing, retries with backoff."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.hooks import Deliverer, HookEnv
from runner.models import HookSpec, HookState, Kind, Plan, Run, TaskSpec
from runner.store import Store, open_store
from tests.integration.hookreceiver import receiver

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield s
    finally:
        s.close()


def _render(run: Run) -> bytes:
    return json.dumps({"id": run.id, "state": run.state.value}).encode()


def _ended(store: Store, *hooks: HookSpec) -> str:
    task = TaskSpec(id="a", name="a", kind=Kind.RUN, run="true")
    store.create_run(Plan(workflow="wf", tasks=(task,), hooks=hooks), run_id="r1", now=T0)
    store.cancel_run("r1", now=T0)
    return "r1"


def _deliverer(store: Store, env: dict[str, str]) -> Deliverer:
    return Deliverer(store, name="d", render=_render, env=HookEnv(environ=env), retry_delay=10)


def test_secret_headers_are_read_when_sent(store: Store, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k3y\n")
    with receiver() as got:
        headers = {"A": {"fromEnv": "TOKEN"}, "B": {"fromFile": str(tmp_path / "key")}, "C": "c"}
        _ended(store, HookSpec(on=("always",), url=got.url, headers=headers))
        hooks = _deliverer(store, {"TOKEN": "t0ken"})
        assert hooks.deliver_due(clock=lambda: T0) == 1
        (post,) = got.posts
        assert (post.headers["A"], post.headers["B"], post.headers["C"]) == ("t0ken", "k3y", "c")
        assert post.headers["Runner-Delivery"] == "r1/0/1"
        assert post.body == {"id": "r1", "state": "cancelled"}
    assert store.get_run("r1").hooks[0].state is HookState.DELIVERED


def test_a_missing_secret_fails_the_try_naming_the_variable(store: Store) -> None:
    spec = HookSpec(on=("always",), url="http://127.0.0.1:9/x", headers={"A": {"fromEnv": "NOPE"}})
    _ended(store, spec)
    hooks = _deliverer(store, {})
    assert hooks.deliver_due(clock=lambda: T0) == 1
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.attempts) == (HookState.DUE, 1)
    assert status.last_error == "header A: environment variable NOPE is not set"
    assert status.due_at == T0 + 10  # the backoff
    assert hooks.deliver_due(clock=lambda: T0 + 5) == 0
    assert hooks.deliver_due(clock=lambda: T0 + 10) == 1
    assert store.get_run("r1").hooks[0].due_at == T0 + 10 + 20  # doubled


def test_a_claim_past_its_lease_sends_and_records_nothing(store: Store) -> None:
    with receiver() as got:
        _ended(store, HookSpec(on=("always",), url=got.url))
        hooks = _deliverer(store, {})
        delivery = store.claim_hook("d", now=T0, lease_for=5)
        assert delivery is not None
        hooks.deliver(delivery, clock=lambda: T0 + 6)  # paused past its lease
        assert got.count() == 0
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.attempts) == (HookState.DELIVERING, 1)


def test_a_command_hook_gets_stdin_env_and_its_error_is_kept(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = f'cat > {out}; echo "$RUNNER_RUN_STATE $GREETING" >> {out}; echo boom >&2; exit 4'
    _ended(store, HookSpec(on=("cancelled",), run=run, env={"GREETING": "hi"}, retries=0))
    assert _deliverer(store, {"PATH": "/usr/bin:/bin"}).deliver_due(clock=lambda: T0) == 1
    assert out.read_text() == '{"id": "r1", "state": "cancelled"}cancelled hi\n'
    status = store.get_run("r1").hooks[0]
    assert (status.state, status.last_error) == (HookState.FAILED, "exit 4: boom")


def test_a_run_replaced_by_the_next_tick_records_its_cancelled_hook(store: Store) -> None:
    from runner import workflow
    from runner.cron import fire

    text = (
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: rep}\nspec:\n"
        "  schedule: '@every 1m'\n  concurrencyPolicy: Replace\n"
        "  hooks: [{on: [cancelled], when: rep, webhook: {url: 'http://127.0.0.1:9/x'}}]\n"
        "  tasks: [{name: a, run: 'true'}]\n"
    )
    entry = fire.entry_for(workflow.plan(workflow.loads(text)))
    store.put_schedule(entry, now=T0)
    first = fire.fire_tick(store, store.get_schedule("rep"), T0 + 60, now=T0 + 60)
    assert first.run_id is not None
    store.record_tick("rep", tick=T0 + 60, run_id=first.run_id)
    fire.fire_tick(store, store.get_schedule("rep"), T0 + 120, now=T0 + 120)
    replaced = store.get_run(first.run_id)
    assert (replaced.state.value, [h.state for h in replaced.hooks]) == (
        "cancelled",
        [HookState.DUE],
    )
