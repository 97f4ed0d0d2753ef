"""GitHub Actions workflow commands: `::error …::` annotations and `::group::` log folds.

Escaped as GitHub's workflow-command format requires: in the message (data) `%`, CR and LF
become `%25`, `%0D`, `%0A`; in property values `:` and `,` also become `%3A` and `%2C`.
Active when GITHUB_ACTIONS=true (docs/CI.md); other CIs keep the plain output.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

from runner import config, report
from runner.models import Run, TaskState

if TYPE_CHECKING:
    from runner.store import Store

MAX_GROUPS = 200  # task logs `apply` prints in groups; the rest are named by a command


def enabled() -> bool:
    return os.environ.get(config.ENV_GITHUB_ACTIONS) == "true"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **props: str | int) -> str:
    """One workflow command line, e.g. `::error file=a.yaml,line=3,col=5::message`."""
    body = ",".join(f"{k}={escape_property(str(v))}" for k, v in props.items())
    return f"::{name}{' ' + body if body else ''}::{escape_data(message)}"


def print_run(store: Store, run: Run, *, secrets: list[str], stream: TextIO) -> None:
    """After `apply`: each failed task as an `::error` (an allowed failure as a `::warning`),
    then each task's log in a `::group::` (failed tasks first)."""
    for task in run.tasks:
        if task.state is TaskState.FAILED:
            message = f"{report.failure_message(task)}; log: runner logs {run.id} {task.id}"
            kind = "warning" if task.allow_failure else "error"
            print(command(kind, report.mask(message, secrets), title=task.id), file=stream)
    ordered = sorted(run.tasks, key=lambda t: t.state is not TaskState.FAILED)
    shown = [t for t in ordered if t.attempts][:MAX_GROUPS]
    for task in shown:
        last = task.attempts[-1]
        text = store.get_log(run.id, task.id, attempt=last.number)
        title = f"{task.id} ({task.state.value}, attempt {last.number})"
        print(command("group", title), file=stream)
        stream.write(report.mask(text, secrets) if secrets else text)
        if text and not text.endswith("\n"):
            stream.write("\n")
        print("::endgroup::", file=stream)
    rest = sum(1 for t in run.tasks if t.attempts) - len(shown)
    if rest > 0:
        print(f"{rest} more task logs: runner logs {run.id}", file=stream)
    stream.flush()


def out_stream(json_output: bool) -> TextIO:
    """Where annotations go: stderr when stdout carries JSON (GitHub reads both)."""
    return sys.stderr if json_output else sys.stdout
