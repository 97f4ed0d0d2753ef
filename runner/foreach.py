"""forEach: a task that becomes one instance per item of an upstream task's JSON list output
(docs/WORKFLOW.md, "Fan-out over a task's output"). Pure: the stores call these inside the
transaction that finds the task ready, and write what they return."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runner import models, templating

DEFAULT_LIMIT = 10_000


class ForEachError(ValueError):
    """The output cannot be expanded; the message is the task's reason in `get run`."""


def instance_id(name: str, index: int) -> str:
    """`name[i=N]`."""
    return f"{name}[i={index}]"


def items_of(fe: models.ForEach, outputs: Mapping[str, str] | None) -> list[Any]:
    """The items of the list output `fe` reads; ForEachError when there is none, it is not a
    JSON list, or it holds more than the limit."""
    where = f"forEach: tasks.{fe.task}.outputs.{fe.output}"
    text = (outputs or {}).get(fe.output)
    if text is None:
        raise ForEachError(f"{where} was not set; write `{fe.output}=[...]` to $RUNNER_OUTPUT")
    try:
        items = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise ForEachError(f"{where} is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(items, list):
        raise ForEachError(f"{where} is a JSON {type(items).__name__}, not a list")
    if len(items) > fe.limit:
        raise ForEachError(
            f"{where} has {len(items):,} items, more than the limit of {fe.limit:,}; "
            "raise spec.limits.forEach or split the list"
        )
    return items


def instances(spec: models.TaskSpec, items: list[Any]) -> list[dict[str, Any]]:
    """One task spec (`TaskSpec.to_dict` form) per item: id `name[i=N]`, `${{ item }}`
    filled, the expanded task's dependencies (done: shown in the run's DAG), no condition
    (the expanded task had it). Built as dicts: a 10,000-item expansion is one transaction."""
    base = spec.to_dict()
    for key in ("if", "forEach"):
        base.pop(key, None)
    templated = "${{" in json.dumps(base)
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        one = templating.render_item(spec, item).to_dict() if templated else dict(base)
        if templated:
            for key in ("if", "forEach"):
                one.pop(key, None)
        one["id"] = instance_id(spec.name, index)
        one["when"] = "always"  # created once its task may run: a retry re-runs it as is
        one["matrix"] = {**spec.matrix, "i": index}
        if item is not None:
            one["item"] = item
        out.append(one)
    return out


def state_of(states: list[tuple[models.TaskState, bool]]) -> models.TaskState:
    """The expanded task's state once its instances are all terminal: failed when one counts
    as a failure, else succeeded."""
    failed = any(s is models.TaskState.FAILED and not allowed for s, allowed in states)
    return models.TaskState.FAILED if failed else models.TaskState.SUCCEEDED
