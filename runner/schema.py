"""Find, load and apply the workflow JSON Schema: the one home of `jsonschema`.

A valid document is checked by a predicate compiled from the schema (`is_valid`); jsonschema
itself is imported only to explain an invalid one (its import is about 60 ms of `runner apply`'s
start-up: docs/PERFORMANCE.md, "Fast by default").

Every validation error becomes an `errors.Problem` located at the YAML node at fault (the caller
passes `locate`, which maps a path to a position) with a short human message: unknown keys get a
"did you mean" suggestion, and the schema's `x-hint` keywords explain what a valid value looks like.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import numbers
import re
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import errors

if TYPE_CHECKING:
    import jsonschema
    import jsonschema.exceptions

WORKFLOW_SCHEMA = "workflow.schema.json"

Locate = Callable[[tuple[str | int, ...], bool], tuple[int, int]]  # (path, at_key) -> (line, col)
_ONE_KIND = "a task has exactly one of run, args or call"
_ONE_HOOK = "a hook has exactly one of run, args or webhook"
_HOOK_KINDS = ("run", "args", "webhook")
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
    import jsonschema  # only to explain an invalid document (see the module docstring)

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
    if is_valid(data, name=name):
        return []
    problems: dict[errors.Problem, None] = {}  # ordered and without duplicates
    for error in _validator(name).iter_errors(data):
        problems.update(dict.fromkeys(_problems(error, data, file=file, locate=locate)))
    return list(problems)


def is_valid(data: Any, *, name: str = WORKFLOW_SCHEMA) -> bool:
    """A fast yes/no: True only when jsonschema would find no error in `data`.

    The check is compiled from the same schema (`_compile`), about ten times faster than
    jsonschema's walk. It may answer False for a valid document in a case it does not decide
    (then `validate` runs jsonschema, which finds nothing); it never answers True for an
    invalid one. Schemas with keywords it does not know are always left to jsonschema.
    """
    check = _fast_check(name)
    return check is not None and check(data)


Check = Callable[[Any], bool]


class _Unsupported(Exception):
    """A keyword `_compile` does not implement: leave the schema to jsonschema."""


@functools.cache
def _fast_check(name: str) -> Check | None:
    schema = load_schema(name)
    try:
        return _compile(_inline(schema, schema.get("$defs", {})))
    except _Unsupported:
        return None


_ANNOTATIONS = {"$schema", "$id", "$defs", "$comment", "title", "description", "default"}


def _compile(node: Any) -> Check:
    """A predicate with jsonschema's (Draft 2020-12) verdict for the keywords used here."""
    if isinstance(node, bool):
        return (lambda _: True) if node else (lambda _: False)
    if not isinstance(node, dict):
        raise _Unsupported(repr(node))
    checks: list[Check] = [_object(node)] if _OBJECT_KEYWORDS & node.keys() else []
    for key, value in node.items():
        if key in _ANNOTATIONS or key in _OBJECT_KEYWORDS or key.startswith("x-"):
            continue
        maker = _KEYWORDS.get(key)
        if maker is None:
            raise _Unsupported(key)
        check = maker(value, node)
        if check is not None:
            checks.append(check)
    if len(checks) == 2:  # the usual case, without a generator
        first, second = checks
        return lambda v: first(v) and second(v)
    return checks[0] if len(checks) == 1 else lambda v: all(check(v) for check in checks)


_OBJECT_KEYWORDS = {"properties", "additionalProperties", "propertyNames", "required"}


def _object(node: dict[str, Any]) -> Check:
    """properties, additionalProperties, propertyNames and required in one pass over the keys."""
    props = {k: _compile(s) for k, s in node.get("properties", {}).items()}
    extra = node.get("additionalProperties", True)
    closed = extra is False
    rest = None if extra is True or closed else _compile(extra)
    names = _compile(node["propertyNames"]) if "propertyNames" in node else None
    required = tuple(node.get("required", ()))

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, item in v.items():
            sub = props.get(k)
            if sub is None:
                if closed or (rest is not None and not rest(item)):
                    return False
            elif not sub(item):
                return False
            if names is not None and not names(k):
                return False
        return all(r in v for r in required)

    return check


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {  # jsonschema's Draft 2020-12 type checker
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def _type(value: Any, _: Any) -> Check:
    names = value if isinstance(value, list) else [value]
    if not all(n in _TYPES for n in names):
        raise _Unsupported(f"type {value!r}")
    tests = [_TYPES[n] for n in names]
    return tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests)


def _enum(value: list[Any], _: Any) -> Check:
    if not all(isinstance(v, str) for v in value):  # for strings, jsonschema's `equal` is ==
        raise _Unsupported(f"non-string const or enum {value!r}")
    allowed = frozenset(value)
    return lambda v: isinstance(v, str) and v in allowed


def _dependent(value: Any, _: Any) -> Check:
    subs = [(k, _compile(s)) for k, s in value.items()]
    return lambda v: not isinstance(v, dict) or all(s(v) for k, s in subs if k in v)


def _items(value: Any, _: Any) -> Check:
    sub = _compile(value)
    return lambda v: not isinstance(v, list) or all(map(sub, v))


def _unique(value: Any, _: Any) -> Check | None:
    if not value:
        return None
    # Decided only for lists of strings; anything else goes to jsonschema's own `uniq`.
    return lambda v: (
        not isinstance(v, list) or (all(type(item) is str for item in v) and len(set(v)) == len(v))
    )


def _pattern(value: Any, _: Any) -> Check:
    search = re.compile(value).search
    return lambda v: not isinstance(v, str) or search(v) is not None


def _bound(test: Callable[[Any, Any], bool], kind: Check) -> Callable[[Any, Any], Check]:
    def make(limit: Any, _: Any) -> Check:
        return lambda v: not kind(v) or test(v, limit)

    return make


def _any_of(value: Any, _: Any) -> Check:
    subs = [_compile(s) for s in value]
    return lambda v: any(s(v) for s in subs)


def _one_of(value: Any, _: Any) -> Check:
    subs = [_compile(s) for s in value]
    return lambda v: sum(1 for s in subs if s(v)) == 1


_KEYWORDS: dict[str, Callable[[Any, Any], Check | None]] = {
    "type": _type,
    "enum": _enum,
    "const": lambda value, node: _enum([value], node),
    "dependentSchemas": _dependent,
    "items": _items,
    "uniqueItems": _unique,
    "pattern": _pattern,
    "minimum": _bound(lambda v, n: v >= n, _is_number),
    "maximum": _bound(lambda v, n: v <= n, _is_number),
    "minLength": _bound(lambda v, n: len(v) >= n, _TYPES["string"]),
    "maxLength": _bound(lambda v, n: len(v) <= n, _TYPES["string"]),
    "minItems": _bound(lambda v, n: len(v) >= n, _TYPES["array"]),
    "minProperties": _bound(lambda v, n: len(v) >= n, _TYPES["object"]),
    "maxProperties": _bound(lambda v, n: len(v) <= n, _TYPES["object"]),
    "anyOf": _any_of,
    "oneOf": _one_of,
}


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
    if sub is False and "fromEnv" in error.schema_path:  # a secret reference names both
        line, col = locate(path, False)
        message = f"{label(data, path)}: give fromEnv or fromFile, not both"
        yield errors.Problem(file=file, line=line, col=col, message=message, path=_dotted(path))
        return
    if sub is False and "dependentSchemas" in error.schema_path:  # two of run, args, call
        hook = len(path) > 1 and path[1] == "hooks"  # a hook: run, args or webhook
        kinds, one = (_HOOK_KINDS, _ONE_HOOK) if hook else (("run", "args", "call"), _ONE_KIND)
        found = [k for k in kinds if isinstance(inst, dict) and k in inst]
        found = found or [k for k in kinds if k in _at(data, path)]
        line, col = locate(path, False)
        message = f"{label(data, path)}: {one}, found {' and '.join(found)}"
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
    from jsonschema.exceptions import best_match

    return best_match(matching) if matching else None


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
        text = part if isinstance(part, int) else errors.clip(part, 40)
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else str(text))
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
