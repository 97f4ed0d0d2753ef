"""`${{ ... }}` references: what a task's text becomes for a run (matrices: runner.planning).

A reference is a dotted name, nothing more: `params.NAME`, `matrix.KEY`, `run.id`,
`run.scheduled_time`, `tasks.NAME.outputs.KEY`, or in a forEach task `item` and `item.FIELD`.
Planning fills params and matrix values (`render`); the store fills `item` when it expands a
forEach task (`render_item`); the worker fills the rest when an attempt starts
(`render_runtime`).

Quoting rule: in `run` every substituted value is `shlex.quote`d, so it is one shell word and can
never inject shell syntax; in `args`, `env`, `with` and `workdir` a value is plain text (an `args`
element stays one argument). A value is never read as a template again: a `${{` inside a value
filled at plan time is written as the literal token `${{ '${{' }}`, which `render_runtime` turns
back into `${{` (authors may write that token too, for a literal `${{`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import json
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from runner import models

LITERAL = "${{ '${{' }}"
_TOKEN = re.compile(
    r"(?P<lit>\$\{\{\s*'\$\{\{'\s*\}\})|\$\{\{(?P<expr>[^{}]{0,200})\}\}|(?P<bad>\$\{\{)"
)
_DOUBLE_QUOTED = re.compile(r'([\\$`"])')  # what a backslash must protect inside "..."
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
HELP = (
    "use ${{ params.NAME }}, ${{ matrix.KEY }}, ${{ run.id }}, ${{ run.scheduled_time }}, "
    "${{ tasks.NAME.outputs.KEY }}, or in a forEach task ${{ item }} or ${{ item.FIELD }}"
)


class TemplateError(ValueError):
    """A `${{ }}` that cannot be rendered; the message says which and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """One reference: `scope` is params, matrix, run or tasks; `key` is the output key."""

    scope: str
    name: str
    key: str = ""
    text: str = ""

    @property
    def runtime(self) -> bool:
        return self.scope in ("run", "tasks", "item")


@functools.lru_cache(maxsize=4096)  # a file repeats the same few references many times
def parse(expr: str) -> Ref:
    """The reference inside `${{ expr }}`; TemplateError when it is not one we support."""
    parts = expr.strip().split(".")
    text = "${{ " + expr.strip() + " }}"
    ok = all(_PART.fullmatch(p) for p in parts)
    if ok and len(parts) == 2 and parts[0] in ("params", "matrix"):
        return Ref(parts[0], parts[1], text=text)
    if ok and len(parts) == 2 and parts[0] == "run" and parts[1] in ("id", "scheduled_time"):
        return Ref("run", parts[1], text=text)
    if ok and len(parts) == 4 and parts[0] == "tasks" and parts[2] == "outputs":
        return Ref("tasks", parts[1], parts[3], text=text)
    if ok and parts[0] == "item" and len(parts) <= 2:
        return Ref("item", "item", parts[1] if len(parts) == 2 else "", text=text)
    raise TemplateError(f"unsupported reference {_clip(text)}; {HELP}")


def references(text: str) -> tuple[list[Ref], list[str]]:
    """Every reference in `text`, and a message for each `${{` that is not a valid one."""
    refs: list[Ref] = []
    problems: list[str] = []
    for match in _TOKEN.finditer(text):
        if match.group("bad") is not None:
            problems.append(f"'${{{{' without a matching '}}}}' in {_clip(text)}; {HELP}")
        elif match.group("expr") is not None:
            try:
                refs.append(parse(match.group("expr")))
            except TemplateError as exc:
                problems.append(str(exc))
    return refs, problems


def check_ref(
    ref: Ref,
    *,
    params: Mapping[str, Any],
    matrix_keys: Collection[str],
    upstream: Collection[str],
    tasks: Mapping[str, bool],
) -> str | None:
    """What is wrong with `ref` in a task, or None. `tasks` maps names to "is a matrix task"."""
    if ref.scope == "params" and ref.name not in params:
        return f"unknown param {ref.name!r}{_suggest(ref.name, params)}; declare it in spec.params"
    if ref.scope == "matrix" and ref.name not in matrix_keys:
        return f"the task has no matrix key {ref.name!r}{_suggest(ref.name, matrix_keys)}"
    if ref.scope != "tasks":
        return None
    if ref.name not in tasks:
        return f"unknown task {ref.name!r}{_suggest(ref.name, tasks)}"
    if ref.name not in upstream:
        return f"task {ref.name!r} is not upstream of this task; add it to depends"
    if tasks[ref.name]:
        return f"task {ref.name!r} has a matrix: its outputs are per instance, not one value"
    return None


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def strings_at(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside a JSON-like value, with its path under `path`."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_at(v, (*path, k))
    elif isinstance(value, list):
        for j, v in enumerate(value):
            yield from strings_at(v, (*path, j))


def to_text(value: Any) -> str:
    """How a value reads when substituted: YAML spelling for booleans and null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def escape(text: str) -> str:
    """`text` with every `${{` written as the literal token, so it is never read as a template."""
    return text.replace("${{", LITERAL)


def _substitute(
    text: str, lookup: Callable[[Ref], str | None], *, quote: bool, literal: str | None = None
) -> str:
    if "${{" not in text:  # most text has no template at all
        return text
    out: list[str] = []
    pos = 0
    lexer = ShellLexer()
    for match in _TOKEN.finditer(text):
        gap = text[pos : match.start()]
        out.append(gap)
        pos = match.end()
        if quote:
            lexer.feed(gap)
        if match.group("lit") is not None and literal is not None:
            out.append(literal)
            continue
        value = _value(match.group("expr"), lookup, strict=literal is None)
        if value is None:  # not a reference, or filled later
            out.append(match.group(0))
            continue
        if quote and lexer.heredoc:
            raise TemplateError(f"{_clip(match.group(0))} in a here-document: {_HEREDOC}")
        value = shell_quote(value, lexer.context) if quote else value
        out.append(value if literal is not None else escape(value))  # at run time nothing follows
    out.append(text[pos:])
    return "".join(out)


def _value(expr: str | None, lookup: Callable[[Ref], str | None], *, strict: bool) -> str | None:
    """What `${{ expr }}` becomes (None: keep it as written). At run time (`strict` False) text
    that is not a reference stays text: planning has refused every such text an author wrote,
    so what is left came from a value and is inert."""
    if expr is None:
        return None
    try:
        ref = parse(expr)
    except TemplateError:
        if strict:
            raise
        return None
    return lookup(ref)


_HEREDOC = "values cannot be quoted there; pass it in an env variable such as RUNNER_PARAM_<NAME>"


def shell_quote(value: str, context: str) -> str:
    """`value` as inert text where it lands: unquoted, inside '...' or inside "..."."""
    if context == "single":
        return value.replace("'", "'\\''")
    if context == "double":
        return _DOUBLE_QUOTED.sub(r"\\\1", value)
    return shlex.quote(value)


class ShellLexer:
    """Just enough POSIX sh lexing to know the quoting context at a point of a `run` script."""

    def __init__(self) -> None:
        self.stack = ["none"]  # none | single | double | subst ($(...)) | tick (`...`)
        self.heredoc = False
        self._skip = False

    @property
    def context(self) -> str:
        top = self.stack[-1]
        return top if top in ("single", "double") else "none"

    def feed(self, text: str) -> None:
        i, end = 0, len(text)
        if self._skip and text:
            self._skip, i = False, 1
        while i < end:
            state = self.stack[-1]
            # Jump to the next character that can change the state; the rest is inert.
            found = _SPECIAL.get(state, _SPECIAL["none"]).search(text, i)
            if found is None:
                return
            i = found.start()
            c = text[i]
            if state == "single":
                self.stack.pop()
            elif c == "\\":
                if i + 1 == end:
                    self._skip = True
                i += 1
            elif state == "double":
                self._double(c, text[i + 1 : i + 2])
            else:
                self._unquoted(c, text[i + 1 : i + 2])
            i += 1

    def _double(self, c: str, after: str) -> None:
        if c == '"':
            self.stack.pop()
        elif c == "$" and after == "(":
            self.stack.append("subst")
        elif c == "`":
            self.stack.append("tick")

    def _unquoted(self, c: str, after: str) -> None:
        top = self.stack[-1]
        opened = {"'": "single", '"': "double"}.get(c)
        if opened:
            self.stack.append(opened)
        elif c == "$" and after == "(":
            self.stack.append("subst")
        elif (c == ")" and top == "subst") or (c == "`" and top == "tick"):
            self.stack.pop()
        elif c == "`":
            self.stack.append("tick")
        elif c == "<" and after == "<":
            self.heredoc = True


_SPECIAL = {  # what `ShellLexer.feed` must look at, by state
    "single": re.compile("'"),
    "double": re.compile(r'["\\$`]'),
    "none": re.compile(r"['\"\\$)`<]"),
}


def shell_problems(text: str) -> list[str]:
    """Templates in a `run` script that cannot be quoted safely (inside a here-document)."""
    lexer = ShellLexer()
    pos = 0
    for match in _TOKEN.finditer(text):
        lexer.feed(text[pos : match.start()])
        pos = match.end()
        if match.group("expr") is not None and lexer.heredoc:
            return [f"{_clip(match.group(0))} in a here-document: {_HEREDOC}"]
    return []


def render(text: str, *, params: Mapping[str, Any], matrix: Mapping[str, Any], quote: bool) -> str:
    """Plan time: fill params and matrix values, keep run-time references for `render_runtime`."""

    def lookup(ref: Ref) -> str | None:
        if ref.runtime:
            return None
        values = params if ref.scope == "params" else matrix
        if ref.name not in values:
            raise TemplateError(f"{ref.text}: there is no {ref.scope} value {ref.name!r}")
        return to_text(values[ref.name])

    return _substitute(text, lookup, quote=quote)


def render_value(value: Any, *, params: Mapping[str, Any], matrix: Mapping[str, Any]) -> Any:
    """Plan time for `with`: a string that is exactly one plan-time template keeps its type."""
    if isinstance(value, dict):
        return {k: render_value(v, params=params, matrix=matrix) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, params=params, matrix=matrix) for v in value]
    if not isinstance(value, str):
        return value
    whole = _TOKEN.fullmatch(value.strip())
    if whole and whole.group("expr") is not None:
        ref = parse(whole.group("expr"))
        values = params if ref.scope == "params" else matrix
        if not ref.runtime and ref.name in values and not isinstance(values[ref.name], str):
            return values[ref.name]
    return render(value, params=params, matrix=matrix, quote=False)


def render_runtime(spec: models.TaskSpec, ctx: models.RunContext) -> models.TaskSpec:
    """Fill `${{ run.* }}` and `${{ tasks.NAME.outputs.KEY }}` for one attempt.

    `ctx.outputs` maps an upstream task instance id to its outputs; a task that is not a matrix
    task has its name as instance id. A missing output renders as the empty string (as in GitHub
    Actions). In `run` every value is shell-quoted; literal `${{ '${{' }}` tokens become `${{`.
    """
    if not (spec.args or spec.with_ or spec.env or spec.workdir) and "${{" not in (spec.run or ""):
        return spec  # most specs: nothing to fill, nothing to copy (checked first, at once)
    if not _templated((spec.run, spec.args, spec.with_, spec.env, spec.workdir)):
        return spec
    lookup = _runtime_lookup(ctx)

    def text(value: str, *, quote: bool = False) -> str:
        return _substitute(value, lookup, quote=quote, literal="${{")

    return _filled(spec, text)


def _filled(spec: models.TaskSpec, text: Callable[..., str]) -> models.TaskSpec:
    """`spec` with `text` applied to every templated field (`run` quoted for the shell)."""

    def deep(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [deep(v) for v in value]
        return text(value) if isinstance(value, str) else value

    return dataclasses.replace(
        spec,
        run=None if spec.run is None else text(spec.run, quote=True),
        args=None if spec.args is None else tuple(text(a) for a in spec.args),
        with_=deep(spec.with_),
        env={k: text(v) for k, v in spec.env.items()},
        workdir=None if spec.workdir is None else text(spec.workdir),
    )


def render_item(spec: models.TaskSpec, item: Any) -> models.TaskSpec:
    """An instance of a forEach task: `${{ item }}` and `${{ item.FIELD }}` filled with `item`
    (quoted in `run` like every value; a missing field is the empty string); the other
    run-time references stay for `render_runtime`."""

    def lookup(ref: Ref) -> str | None:
        if ref.scope != "item":
            return None
        value = item if not ref.key else (item.get(ref.key) if isinstance(item, dict) else None)
        return item_text(value)

    def text(value: str, *, quote: bool = False) -> str:
        return _substitute(value, lookup, quote=quote)

    return _filled(spec, text)


def item_text(value: Any) -> str:
    """An item as substituted text: JSON for lists and objects, YAML spelling for scalars."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return to_text(value)


def _templated(value: Any) -> bool:
    """Whether a string anywhere in `value` (dicts, lists and tuples walked) holds `${{`."""
    if isinstance(value, str):
        return "${{" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_templated(v) for v in value)
    return False


def _runtime_lookup(ctx: models.RunContext) -> Callable[[Ref], str]:
    def lookup(ref: Ref) -> str:
        if ref.scope == "run" and ref.name == "id":
            return ctx.run_id
        if ref.scope == "run":
            return iso_utc(ctx.scheduled_time)
        if ref.scope == "tasks":
            return to_text(ctx.outputs.get(ref.name, {}).get(ref.key, ""))
        if ref.scope == "params" and ref.name in ctx.params:
            return to_text(ctx.params[ref.name])
        return ""

    return lookup


def iso_utc(when: float | None) -> str:
    """`2026-01-01T02:00:00Z`, or the empty string for None."""
    if when is None:
        return ""
    stamp = dt.datetime.fromtimestamp(when, dt.UTC)
    spec = "seconds" if when == int(when) else "milliseconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
