"""The plan's stable JSON form and its renderings: text (levels), Graphviz dot and Mermaid."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from runner import models

FORMAT_VERSION = "runner/v1"


def plan_to_json(plan: models.Plan) -> dict[str, Any]:
    """The plan as JSON-ready data; `plan_from_json` reads it back unchanged."""
    s = plan.schedule
    schedule = None
    if s is not None:
        schedule = {
            "cron": s.cron,
            "timezone": s.timezone,
            "concurrencyPolicy": s.concurrency_policy.value,
            "startingDeadlineSeconds": s.starting_deadline,
            "suspend": s.suspend,
            "catchup": s.catchup,
        }
    out: dict[str, Any] = {
        "apiVersion": FORMAT_VERSION,
        "kind": "Plan",
        "workflow": plan.workflow,
        "source": plan.source,
        "hash": plan.hash,
        "description": plan.description,
        "labels": dict(sorted(plan.labels.items())),
        "params": dict(sorted(plan.params.items())),
        "failFast": plan.fail_fast,
        "parallelism": plan.parallelism,
        "timeout": plan.timeout,
        "schedule": schedule,
        "dispatch": plan.dispatch,
        **_aging_json(plan.aging),
        **_concurrency_json(plan.concurrency),
        "tasks": [t.to_dict() for t in plan.tasks],
    }
    if plan.hooks:  # docs/HOOKS.md; absent without hooks, as before they existed
        out["hooks"] = [h.to_dict() for h in plan.hooks]
    return out


def _aging_json(aging: models.Aging | None) -> dict[str, Any]:
    """`{"aging": {...}}` when the plan ages priorities; nothing otherwise (older readers)."""
    return {} if aging is None else {"aging": {"every": aging.every, "by": aging.by}}


def shown_id(t: models.TaskSpec) -> str:
    """How `plan` names a task: `name[*] ← tasks.list.outputs.items` for a forEach task."""
    if t.for_each is None:
        return t.id
    return f"{t.id}[*] \N{LEFTWARDS ARROW} tasks.{t.for_each.task}.outputs.{t.for_each.output}"


def _concurrency_json(found: models.Concurrency | None) -> dict[str, Any]:
    if found is None:
        return {}
    return {"concurrency": {"group": found.group, "cancelInProgress": found.cancel_in_progress}}


def plan_from_json(data: dict[str, Any]) -> models.Plan:
    """The `models.Plan` that `plan_to_json` wrote."""
    s = data.get("schedule")
    schedule = None
    if s is not None:
        schedule = models.Schedule(
            cron=s["cron"],
            timezone=s.get("timezone", "UTC"),
            concurrency_policy=models.ConcurrencyPolicy(s.get("concurrencyPolicy", "Allow")),
            starting_deadline=s.get("startingDeadlineSeconds"),
            suspend=bool(s.get("suspend", False)),
            catchup=s.get("catchup", "latest"),
        )
    return models.Plan(
        workflow=data["workflow"],
        source=data.get("source", ""),
        description=data.get("description", ""),
        labels=dict(data.get("labels") or {}),
        params=dict(data.get("params") or {}),
        fail_fast=bool(data.get("failFast", False)),
        parallelism=data.get("parallelism"),
        timeout=data.get("timeout"),
        schedule=schedule,
        dispatch=data.get("dispatch"),
        aging=None if not data.get("aging") else models.Aging(**data["aging"]),
        tasks=tuple(models.TaskSpec.from_dict(t) for t in data.get("tasks", ())),
        hash=data.get("hash", ""),
        hooks=tuple(models.HookSpec.from_dict(h) for h in data.get("hooks") or ()),
        concurrency=None
        if (cc := data.get("concurrency")) is None
        else models.Concurrency(group=cc["group"], cancel_in_progress=cc["cancelInProgress"]),
    )


def to_json_text(plan: models.Plan) -> str:
    """`plan_to_json` as indented JSON text."""
    return json.dumps(plan_to_json(plan), indent=2, ensure_ascii=False)


def duration(seconds: float | None) -> str:
    """`90.0` -> `1m30s`; None -> `-`."""
    if seconds is None:
        return "-"
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    rest = seconds - int(seconds) + whole
    return out + (f"{rest:g}s" if rest or not out else "")


def _retries(policy: models.RetryPolicy) -> str:
    if policy.limit == 0:
        return "0"
    b = policy.backoff
    cap = "" if b.max is None else f", max {duration(b.max)}"
    return f"{policy.limit} (backoff {duration(b.delay)} x{b.factor:g}{cap})"


def render_text(plan: models.Plan) -> str:
    """Levels (tasks in one level can run together) with priority, retries, timeout, deps."""
    from runner import dag  # only this view needs it, not plan_from_json (cron, store)

    if isinstance(plan.tasks, models.StreamedTasks):
        return _render_by_task(plan)
    graph = dag.build(plan.tasks)
    levels = dag.levels(graph)
    lines = [
        f"plan {plan.workflow}  hash {plan.hash[:12]}  "
        f"{_count(len(plan.tasks), 'task')} in {_count(len(levels), 'level')}",
    ]
    if plan.aging is not None:
        lines.append(f"aging +{plan.aging.by} priority every {duration(plan.aging.every)}")
    if plan.schedule is not None:
        lines.append(f"schedule {plan.schedule.cron!r} ({plan.schedule.timezone})")
    for number, level in enumerate(levels, 1):
        lines.append(f"level {number}:")
        specs = sorted((graph.nodes[n]["spec"] for n in level), key=lambda t: -t.priority)
        for t in specs:
            needs = ", ".join(t.depends) if t.depends else "-"
            cond = "" if t.if_ is None else f"  if {t.if_}"
            lines.append(
                f"  {shown_id(t)}  priority {t.priority}  retries {_retries(t.retries)}  "
                f"timeout {duration(t.timeout)}  needs {needs}{cond}"
            )
    return "\n".join(lines) + "\n"


def _render_by_task(plan: models.Plan) -> str:
    """`render_text` of a streamed plan (more than 10,000 instances, docs/WORKFLOW.md): a line
    per task with its instance count and its first instance, in levels of tasks; one pass
    over the instances, none held."""
    from runner import dag

    count: Counter[str] = Counter()
    first: dict[str, models.TaskSpec] = {}
    for t in plan.tasks:
        count[t.name] += 1
        first.setdefault(t.name, t)
    needs = {
        n: list(dict.fromkeys(d.split("[", 1)[0] for d in t.depends)) for n, t in first.items()
    }
    levels = dag.levels(dag.from_depends(needs))
    lines = [
        f"plan {plan.workflow}  hash {plan.hash[:12]}  {len(plan.tasks):,} task instances of "
        f"{_count(len(first), 'task')} in {_count(len(levels), 'level')} (shown by task: the "
        "plan is streamed)",
    ]
    for number, level in enumerate(levels, 1):
        lines.append(f"level {number}:")
        for name in level:
            t = first[name]
            cond = "" if t.if_ is None else f"  if {t.if_}"
            lines.append(
                f"  {name} ×{count[name]:,} (first {shown_id(t)})  priority {t.priority}  "
                f"retries {_retries(t.retries)}  timeout {duration(t.timeout)}  "
                f"needs {', '.join(needs[name]) or '-'}{cond}"
            )
    return "\n".join(lines) + "\n"


def render_dot(plan: models.Plan) -> str:
    """A Graphviz digraph: `runner plan FILE --format dot | dot -Tsvg > plan.svg`."""
    lines = [f"digraph {json.dumps(plan.workflow)} {{", "  rankdir=LR;"]
    for t in plan.tasks:
        label = json.dumps(shown_id(t), ensure_ascii=False)[1:-1] + f"\\npriority {t.priority}"
        lines.append(f'  {json.dumps(t.id)} [label="{label}"];')
    for t in plan.tasks:
        lines.extend(f"  {json.dumps(d)} -> {json.dumps(t.id)};" for d in t.depends)
    return "\n".join([*lines, "}"]) + "\n"


def render_mermaid(plan: models.Plan) -> str:
    """A Mermaid flowchart (GitHub renders it in Markdown)."""
    ids = {t.id: f"t{i}" for i, t in enumerate(plan.tasks)}
    lines = ["flowchart LR"]
    for t in plan.tasks:
        label = shown_id(t).replace('"', "#quot;")
        lines.append(f'  {ids[t.id]}["{label}"]')
    for t in plan.tasks:
        lines.extend(f"  {ids[d]} --> {ids[t.id]}" for d in t.depends if d in ids)
    return "\n".join(lines) + "\n"


RENDERERS = {"json": lambda p: to_json_text(p) + "\n", "text": render_text}
RENDERERS.update({"dot": render_dot, "mermaid": render_mermaid})


def _count(n: int, noun: str) -> str:
    """`1 task`, `2 tasks`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
