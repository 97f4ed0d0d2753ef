"""Sub-runs, when planning (docs/WORKFLOW.md "Sub-runs"): a `workflow:` task gets its child's
plan, made on the submitting machine from the child file (relative to the file that names it)
and the task's `params` (params and matrix templates filled). So a worker needs no file, and
every problem of the child file is reported with the parent's, at its position. A file that
runs itself, directly or through others, is an error. The worker side is
runner.worker._subrun.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from runner import errors, models, planning, templating, yamlsafe

# (child file, its params as text, the files around it, outer first) -> the child's plan
PlanChild = Callable[[str, Mapping[str, str], tuple[str, ...]], models.Plan]


def plan_json(plan: models.Plan) -> dict[str, Any]:
    """The child plan as `planview.plan_from_json` reads it (no schedule: a sub-run is not
    scheduled)."""
    return {
        "workflow": plan.workflow,
        "source": plan.source,
        "hash": plan.hash,
        "params": dict(sorted(plan.params.items())),
        "failFast": plan.fail_fast,
        "parallelism": plan.parallelism,
        "timeout": plan.timeout,
        "dispatch": plan.dispatch,
        "tasks": [t.to_dict() for t in plan.tasks],
    }


def attach(
    plan: models.Plan,
    doc: yamlsafe.Document,
    *,
    stack: tuple[str, ...],
    plan_child: PlanChild,
) -> models.Plan:
    """The plan with each `workflow:` task's sub-run planned. Raises errors.WorkflowInvalid."""
    # asked of the file, not of the plan: a pass over a streamed plan costs planning time
    if not any("workflow" in t for t in doc.data["spec"]["tasks"]):
        return plan
    index = {t["name"]: i for i, t in enumerate(doc.data["spec"]["tasks"])}
    tasks = tuple(
        _attach_one(spec, doc, index[spec.name], plan, stack=stack, plan_child=plan_child)
        if spec.kind is models.Kind.WORKFLOW
        else spec
        for spec in plan.tasks
    )
    out = dataclasses.replace(plan, tasks=tasks)
    return dataclasses.replace(out, hash=planning.plan_hash(out))


def _attach_one(
    spec: models.TaskSpec,
    doc: yamlsafe.Document,
    i: int,
    plan: models.Plan,
    *,
    stack: tuple[str, ...],
    plan_child: PlanChild,
) -> models.TaskSpec:
    task = doc.data["spec"]["tasks"][i]
    at = ("spec", "tasks", i)
    base = os.path.dirname(doc.file_of(at))
    file = os.path.normpath(os.path.join(base, task["workflow"]))
    real = os.path.realpath(file)
    if real in stack:
        top = os.path.dirname(stack[0])
        chain = " -> ".join(os.path.relpath(f, top) for f in [*stack, real])
        raise errors.WorkflowInvalid([doc.problem((*at, "workflow"), f"sub-run cycle: {chain}")])
    if not os.path.isfile(file):
        message = f"no such workflow file {task['workflow']!r} (relative to this file's folder)"
        raise errors.WorkflowInvalid([doc.problem((*at, "workflow"), message)])
    params = _params(task.get("params") or {}, doc, at, plan=plan, matrix=spec.matrix)
    text = {k: templating.to_text(v) for k, v in params.items()}
    try:
        child = plan_child(file, text, stack)
    except errors.WorkflowInvalid as exc:
        raise _at_params(exc, doc, at, task["workflow"]) from None
    subrun = models.SubRun(workflow=task["workflow"], params=params, plan=plan_json(child))
    return dataclasses.replace(spec, subrun=subrun)


def _at_params(
    exc: errors.WorkflowInvalid, doc: yamlsafe.Document, at: yamlsafe.Path, workflow: str
) -> errors.WorkflowInvalid:
    """The child's problems, with an unknown param moved to the task's `params` entry."""
    problems = []
    for p in exc.problems:
        name = p.message.removeprefix("--param ").split(":", 1)[0]
        if p.message.startswith("--param ") and "has no param" in p.message:
            rest = p.message.split(": ", 1)[1].replace("the workflow", workflow, 1)
            problems.append(doc.problem((*at, "params", name), f"params.{name}: {rest}"))
        else:
            problems.append(p)
    return errors.WorkflowInvalid(problems)


def _params(
    raw: Mapping[str, Any],
    doc: yamlsafe.Document,
    at: yamlsafe.Path,
    *,
    plan: models.Plan,
    matrix: Mapping[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        path = (*at, "params", name)
        try:
            rendered = templating.render_value(value, params=plan.params, matrix=matrix)
        except templating.TemplateError as exc:
            raise errors.WorkflowInvalid([doc.problem(path, str(exc))]) from None
        if isinstance(rendered, str) and "${{" in rendered:
            message = "sub-run params are filled when planning: use params and matrix values"
            raise errors.WorkflowInvalid([doc.problem(path, message)])
        out[name] = rendered
    return out
