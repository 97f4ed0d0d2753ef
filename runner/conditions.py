"""`if:` conditions: where their names come from, checking them at plan time, deciding them
when a task becomes ready (docs/WORKFLOW.md, "Conditions"). The language is `runner.expr`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runner import expr, templating

# What a name is checked with at plan time: its reference, or a message.
CheckRef = Callable[[templating.Ref], str | None]


def source(text: str) -> tuple[str, int]:
    """The expression inside `${{ ... }}` (the whole text when it is not wrapped) and its
    offset in `text`."""
    stripped = text.strip()
    if stripped.startswith("${{") and stripped.endswith("}}"):
        start = text.index("${{") + 3
        inner = text[start : text.rindex("}}")]
        lead = len(inner) - len(inner.lstrip())
        return inner[lead:], start + lead
    return text, 0


def problems(text: str, check_ref: CheckRef) -> list[tuple[int, str]]:
    """(offset in `text`, message) for every problem of a condition: syntax, unknown names."""
    inner, at = source(text)
    try:
        tree = expr.parse(inner)
    except expr.ExprError as exc:
        return [(at + exc.offset, f"if: {exc}")]
    found: list[tuple[int, str]] = []
    for name, offset in expr.names(tree):
        try:
            ref = templating.parse(name)
        except templating.TemplateError:
            found.append((at + offset, f"if: unknown name {name!r}; {_NAMES}"))
            continue
        error = check_ref(ref)
        if error:
            found.append((at + offset, f"if: {name}: {error}"))
    return found


_NAMES = (
    "use params.NAME, matrix.KEY, run.id, run.scheduled_time, tasks.NAME.outputs.KEY, "
    "or in a forEach task item and item.FIELD"
)


def holds(
    text: str,
    *,
    run_id: str,
    params: Mapping[str, Any],
    matrix: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, str]],
    item: Any = None,
) -> tuple[bool, str]:
    """Whether the condition holds for a task becoming ready, and the reason it is skipped
    when it does not. `outputs` maps upstream task names (or ids) to their outputs."""

    def lookup(name: str) -> Any:
        parts = name.split(".")
        if parts[0] == "params":
            return params.get(parts[1]) if len(parts) == 2 else None
        if parts[0] == "matrix":
            return matrix.get(parts[1]) if len(parts) == 2 else None
        if name == "run.id":
            return run_id
        if parts[0] == "tasks" and len(parts) == 4:
            return outputs.get(parts[1], {}).get(parts[3], "")
        if parts[0] == "item":
            if len(parts) == 1:
                return item
            return item.get(parts[1]) if isinstance(item, dict) else None
        return None

    inner, _ = source(text)
    try:
        ok = expr.check(inner, lookup)
    except expr.ExprError as exc:  # checked at plan time: only a store written by hand
        return False, f"skipped: if {_clip(text)} cannot be evaluated: {exc}"
    return ok, "" if ok else f"skipped: if {_clip(text)} is false"


def output_names(text: str) -> set[str]:
    """The tasks whose outputs a condition reads."""
    try:
        tree = expr.parse(source(text)[0])
    except expr.ExprError:
        return set()
    return {n.split(".")[1] for n, _ in expr.names(tree) if n.startswith("tasks.")}


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
