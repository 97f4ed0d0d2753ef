"""Find, load and apply the workflow JSON Schema: the one home of `jsonschema`.

Every validation error becomes an `errors.Problem` located at the YAML node at fault (the caller
passes `locate`, which maps a path to a position) with a short human message: unknown keys get a
"did you mean" suggestion, and the schema's `x-hint` keywords explain what a valid value looks like.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions

from runner import errors

WORKFLOW_SCHEMA = "workflow.schema.json"

Locate = Callable[[tuple[str | int, ...], bool], tuple[int, int]]  # (path, at_key) -> (line, col)
_ONE_KIND = "a task has exactly one of run, args or call"
_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}


def schema_dir() -> Traversable:
    """`runner/schemas` inside an installed wheel, else the source tree's `schemas/`."""
    packaged = importlib.resources.files("runner") / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "schemas"


@functools.cache
def load_schema(name: str = WORKFLOW_SCHEMA) -> dict[str, Any]:
    """The parsed schema file `name`."""
    schema: dict[str, Any] = json.loads((schema_dir() / name).read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(name)
    # Inlining local $refs once saves a reference lookup per node (a third of the time).
    return jsonschema.Draft202012Validator({**_inline(schema, schema.get("$defs", {}))})


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/$defs/NAME"}` replaced by that definition (no cycles)."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
        return _inline(defs[ref.removeprefix("#/$defs/")], defs)
    return {k: _inline(v, defs) for k, v in node.items()}


def validate(
    data: Any, *, file: str, locate: Locate, name: str = WORKFLOW_SCHEMA
) -> list[errors.Problem]:
    """Every problem the schema finds in `data`, located with `locate`; empty when valid."""
    problems: dict[errors.Problem, None] = {}  # ordered and without duplicates
    for error in _validator(name).iter_errors(data):
        problems.update(dict.fromkeys(_problems(error, data, file=file, locate=locate)))
    return list(problems)


def _problems(
    error: jsonschema.exceptions.ValidationError, data: Any, *, file: str, locate: Locate
) -> Iterable[errors.Problem]:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    sub: Any = error.schema
    inst: Any = error.instance
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(sub.get("properties", {}))
        for key in sorted(set(inst) - set(known)):
            line, col = locate((*path, key), True)
            message = f"{label(data, path)}: unknown key {key!r}{suggest(key, known)}"
            yield errors.Problem(
                file=file, line=line, col=col, message=message, path=_dotted((*path, key))
            )
        return
    if error.validator in ("oneOf", "anyOf"):
        branch = _failed_branch(error)
        if branch is not None:  # a branch of the right type failed for its own reason: say it
            yield from _problems(branch, data, file=file, locate=locate)
            return
    if sub is False and "dependentSchemas" in error.schema_path:  # two of run, args, call
        found = [k for k in ("run", "args", "call") if isinstance(inst, dict) and k in inst]
        found = found or [k for k in ("run", "args", "call") if k in _at(data, path)]
        line, col = locate(path, False)
        message = f"{label(data, path)}: {_ONE_KIND}, found {' and '.join(found)}"
        yield errors.Problem(file=file, line=line, col=col, message=message, path=_dotted(path))
        return
    at_key = "propertyNames" in error.schema_path
    where = (*path, inst) if at_key else path
    line, col = locate(where, at_key)
    message = f"{label(data, path)}: {_message(error)}"
    yield errors.Problem(file=file, line=line, col=col, message=message, path=_dotted(path))


def _message(error: jsonschema.exceptions.ValidationError) -> str:
    sub: Any = error.schema
    value: Any = error.validator_value
    inst: Any = error.instance
    hint = sub.get("x-hint") if isinstance(sub, dict) else None
    kind = error.validator
    if kind in ("oneOf", "anyOf"):
        return _alternatives(error, hint)
    if kind == "propertyNames":
        return f"invalid key {_short(inst)}; {hint or error.message}"
    if kind == "required":
        missing = [k for k in value if k not in inst]
        return f"missing required key {missing[0]!r}" if missing else error.message
    texts: dict[str, Callable[[], str]] = {
        "type": lambda: f"expected {_types(value)}, got {_describe(inst)}",
        "const": lambda: f"expected {value!r}, got {_short(inst)}",
        "enum": lambda: f"{_short(inst)} is not one of {', '.join(map(str, value))}",
        "pattern": lambda: f"{_short(inst)} is not valid",
        "minimum": lambda: f"{inst} is less than the minimum of {value}",
        "maximum": lambda: f"{inst} is more than the maximum of {value}",
        "minLength": lambda: "must not be empty",
        "maxLength": lambda: f"{_short(inst)} is longer than {value} characters",
        "minItems": lambda: f"needs at least {value} item{'s' if value != 1 else ''}",
        "minProperties": lambda: "must not be empty",
        "uniqueItems": lambda: "has duplicate items",
    }
    text = texts.get(str(kind))
    message = text() if text else _clip(error.message)
    return f"{message}; {hint}" if hint else message


def _alternatives(error: jsonschema.exceptions.ValidationError, hint: str | None) -> str:
    inst: Any = error.instance
    choices: Any = error.validator_value
    if all(isinstance(c, dict) and list(c) == ["required"] for c in choices):
        names = [c["required"][0] for c in choices]
        found = [n for n in names if isinstance(inst, dict) and n in inst]
        wanted = ", ".join(names[:-1]) + f" or {names[-1]}"
        return f"needs one of {wanted}" + (f", found {' and '.join(found)}" if found else "")
    return f"{_short(inst)} is not valid; {hint}" if hint else _clip(error.message)


def _failed_branch(
    error: jsonschema.exceptions.ValidationError,
) -> jsonschema.exceptions.ValidationError | None:
    choices: Any = error.validator_value
    if all(isinstance(c, dict) and list(c) == ["required"] for c in choices):
        return None
    matching = [e for e in error.context or () if e.validator != "type"]
    return jsonschema.exceptions.best_match(matching) if matching else None


def label(data: Any, path: tuple[str | int, ...]) -> str:
    """A readable name for `path`: `tasks.build.retries` rather than `spec.tasks[3].retries`."""
    if len(path) >= 3 and path[:2] == ("spec", "tasks") and isinstance(path[2], int):
        try:
            name = data["spec"]["tasks"][path[2]]["name"]
        except (KeyError, IndexError, TypeError):
            name = None
        if isinstance(name, str) and name:
            return _dotted(("tasks", name, *path[3:]))
    return _dotted(path) or "the document"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'depends'?` when a choice is close to `word`, else the known choices."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (known: {', '.join(options)})" if 0 < len(options) <= 25 else ""


def _at(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _types(value: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "integer": "an integer"}
    items = value if isinstance(value, list) else [value]
    return " or ".join(names.get(v, f"a {v}") for v in items)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = _JSON_TYPES.get(type(value), "a number")
    return kind if isinstance(value, dict | list) else f"{kind} {_short(value)}"


def _short(value: Any) -> str:
    return _clip(repr(value), 60)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
