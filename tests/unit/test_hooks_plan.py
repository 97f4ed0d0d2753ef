"""`spec.hooks` at plan time (docs/HOOKS.md): the plan's HookSpecs, and FILE:LINE:COL errors
from the schema and the semantic checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner import errors, planview, schema, workflow
from runner.models import HookSpec, RunState

HEAD = "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: nightly}\nspec:\n"
TASKS = "  tasks:\n    - {name: a, run: 'true'}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.plan(workflow.loads(HEAD + text, file="w.yaml"))
    return info.value.message.splitlines()


def test_hooks_become_plan_hook_specs() -> None:
    text = HEAD + (
        "  schedule: '@daily'\n"
        "  params: {channel: ops}\n"
        "  hooks:\n"
        "    - on: [failure, timeout]\n"
        "      webhook:\n"
        "        url: https://hooks.example.com/${{ params.channel }}\n"
        "        headers: {Authorization: {fromEnv: SLACK_TOKEN}, X-Team: data}\n"
        "    - on: [missed_tick]\n"
        "      when: nightly\n"
        "      run: mail -s failed ops@example.com\n"
        "      timeout: 1m\n"
        "      retries: 2\n" + TASKS
    )
    loaded = workflow.loads(text)
    assert schema.is_valid(loaded.doc.data)  # the fast check decides hooks too
    plan = workflow.plan(loaded)
    post, mail = plan.hooks
    assert post.url == "https://hooks.example.com/ops"
    assert post.headers == {"Authorization": {"fromEnv": "SLACK_TOKEN"}, "X-Team": "data"}
    assert (mail.run, mail.timeout, mail.retries, mail.when) == (
        "mail -s failed ops@example.com",
        60.0,
        2,
        "nightly",
    )
    assert HookSpec.from_dict(post.to_dict()) == post
    assert planview.plan_from_json(planview.plan_to_json(plan)) == plan  # schedules keep hooks
    no_hooks = workflow.plan(workflow.loads(HEAD + TASKS))
    assert no_hooks.hash != plan.hash


def test_which_ends_a_hook_fires_on() -> None:
    hook = HookSpec(on=("failure",), url="http://x")
    assert hook.fires(state=RunState.FAILED, reason="timeout", run_key=None)
    assert not hook.fires(state=RunState.CANCELLED, reason="replaced", run_key=None)
    timeout = HookSpec(on=("timeout",), run="x")
    assert timeout.fires(state=RunState.FAILED, reason="timeout", run_key=None)
    assert not timeout.fires(state=RunState.FAILED, reason=None, run_key=None)
    scheduled = HookSpec(on=("always",), run="x", when="nightly")
    assert scheduled.fires(state=RunState.SUCCEEDED, reason=None, run_key="cron:nightly:17")
    assert not scheduled.fires(state=RunState.SUCCEEDED, reason=None, run_key=None)


def test_schema_errors_name_file_line_and_column() -> None:
    got = problems(
        "  hooks:\n"
        "    - on: [sometimes]\n"
        "      webhook: {url: 'ftp://x', headers: {A: {fromVault: x}}}\n"
        "    - {on: [always], run: x, webhook: {url: 'http://x'}}\n" + TASKS
    )
    assert got[0].startswith("w.yaml:6:12: spec.hooks[0].on[0]: 'sometimes' is not one of")
    assert got[1].startswith("w.yaml:7:22: spec.hooks[0].webhook.url:")
    assert got[2] == (
        "w.yaml:7:47: spec.hooks[0].webhook.headers.A: unknown key 'fromVault'"
        " (known: fromEnv, fromFile)"
    )
    assert got[3] == (
        "w.yaml:8:7: spec.hooks[1]: a hook has exactly one of run, args or webhook, "
        "found run and webhook"
    )


def test_missed_tick_and_when_need_this_files_schedule() -> None:
    got = problems(
        "  hooks:\n"
        "    - {on: [failure, missed_tick], run: x}\n"
        "    - {on: [always], run: x, when: other}\n" + TASKS
    )
    assert got[0] == "w.yaml:6:22: missed_tick needs spec.schedule: add one or remove missed_tick"
    assert got[1].startswith("w.yaml:7:36: when: 'other' names no schedule of this file")


def test_the_examples_of_docs_hooks_md_plan() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "HOOKS.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    head = HEAD.replace("nightly", "nightly-etl") + "  schedule: '@daily'\n"
    head += "  params: {slack_url: 'https://hooks.slack.com/x'}\n"
    for block in blocks:
        doc = block if block.startswith("apiVersion") else head + block + TASKS
        assert workflow.plan(workflow.loads(doc)).hooks
