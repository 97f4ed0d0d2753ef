"""Safe, bounded YAML loading that remembers where every node was: the one home of `yaml`.

`load_text` builds plain JSON-like values (dict, list, str, int, float, bool, None) straight
from the parser's events, so no tag can build an object, and records the 1-based line/column
of every value and mapping key. Hostile input fails with `errors.WorkflowInvalid`, never
with another exception: files over `MAX_BYTES`, nesting deeper than `MAX_DEPTH`, more than
`MAX_NODES` nodes, aliases that would expand to more than `MAX_ALIAS_NODES` nodes
("billion laughs"), duplicate mapping keys and tags other than the standard scalar,
sequence and mapping ones. Aliases share the anchored value (as PyYAML does); the caps bound
what a later walk (schema validation, plan JSON) can visit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.cyaml
from yaml import events

from runner import errors

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 1_000_000
MAX_ALIAS_NODES = 100_000

Path = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based (line, col)

_T = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"}
_TEXT_TAGS = {_T + "str", _T + "timestamp", _T + "binary", "!"}  # kept as written
_CONSTRUCT = yaml.SafeLoader("")  # only its construct_yaml_* scalar methods are used
_RESOLVER = yaml.resolver.Resolver()
_PARSER: Callable[[str], Any] = yaml.SafeLoader
if yaml.__with_libyaml__:  # libyaml parses about ten times faster; the building stays ours
    _PARSER = yaml.cyaml.CParser  # type: ignore[attr-defined]


@dataclass(slots=True)
class Document:
    """A loaded YAML document: its value and the position of each node by path."""

    file: str
    data: Any
    positions: dict[Path, Pos] = field(default_factory=dict)
    key_positions: dict[Path, Pos] = field(default_factory=dict)
    # Nodes merged in from other files (runner.include): path prefix -> the file it came from.
    origins: dict[Path, str] = field(default_factory=dict)

    def file_of(self, path: Path) -> str:
        """The file the node at `path` was read from (`file`, unless merged in from another)."""
        if self.origins:
            for n in range(len(path), 0, -1):
                if path[:n] in self.origins:
                    return self.origins[path[:n]]
        return self.file

    def pos(self, path: Path) -> Pos:
        """Position of the value at `path`, or of its nearest recorded ancestor."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def key_pos(self, path: Path) -> Pos:
        """Position of the mapping key that names `path` (the value's when it has no key)."""
        return self.key_positions.get(path) or self.pos(path)

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> errors.Problem:
        line, col = self.key_pos(path) if at_key else self.pos(path)
        return errors.Problem(
            file=self.file_of(path), line=line, col=col, message=message, path=dotted(path)
        )


def dotted(path: Path) -> str:
    """`("spec", "tasks", 0, "run")` -> `spec.tasks[0].run`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Fatal(Exception):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


@dataclass(slots=True)
class _Value:
    value: Any
    size: int  # nodes, counting what aliases expand to
    depth: int


def _resolve(value: str, plain: bool) -> str:
    """The tag of an untagged scalar: `Resolver.resolve` without its per-call overhead."""
    if not plain:
        return _T + "str"
    for tag, regexp in _IMPLICIT.get(value[:1], _WILDCARDS):
        if regexp.match(value):
            return str(tag)
    return _T + "str"


_RULES: dict[str | None, list[tuple[str, Any]]] = _RESOLVER.yaml_implicit_resolvers
_WILDCARDS = _RULES.get(None, [])
_IMPLICIT = {  # the resolver's implicit patterns by first character, then the wildcards
    first: [*rules, *_WILDCARDS] for first, rules in _RULES.items() if first is not None
}


def _is_text(event: Any) -> bool:
    """An untagged scalar that no implicit type can match: quoted, or an unlikely first char."""
    return not event.implicit[0] or (not _WILDCARDS and event.value[:1] not in _IMPLICIT)


def _pos(event: Any) -> Pos:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1)


class _Builder:
    """Turns one document's events into values, positions and problems.

    Sizes and depths (what an alias expands to) are kept only for anchored values: `expanded`
    counts value nodes built so far (an alias counts as the nodes of its target) and `reach` the
    deepest level reached, so an anchored value's size and depth are differences of the two.
    """

    def __init__(self, parser: Any, doc: Document) -> None:
        self.parser = parser
        self.doc = doc
        self.positions = doc.positions
        self.anchors: dict[str, _Value] = {}
        self.nodes = 0
        self.alias_nodes = 0
        self.expanded = 0
        self.reach = 0
        self.problems: list[errors.Problem] = []

    def node(self, event: Any, path: Path, depth: int) -> Any:
        """The value that starts with `event` (already taken from the parser)."""
        if depth > MAX_DEPTH:
            raise _Fatal(_pos(event), f"nesting is deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Fatal(_pos(event), f"the document has more than {MAX_NODES:,} nodes")
        kind = type(event)
        if kind is events.AliasEvent:
            return self.alias(event, path, depth)
        mark = event.start_mark
        self.positions[path] = (mark.line + 1, mark.column + 1)
        if event.anchor is None:
            if kind is events.ScalarEvent and event.tag is None and _is_text(event):
                self.expanded += 1  # the common case of `build`, inline
                if depth > self.reach:
                    self.reach = depth
                return event.value
            return self.build(event, kind, path, depth)
        start, reach = self.expanded, self.reach
        self.reach = depth
        value = self.build(event, kind, path, depth)
        self.anchors[event.anchor] = _Value(value, self.expanded - start, self.reach - depth + 1)
        self.reach = max(reach, self.reach)
        return value

    def build(self, event: Any, kind: type, path: Path, depth: int) -> Any:
        self.expanded += 1
        if depth > self.reach:
            self.reach = depth
        if kind is events.ScalarEvent:
            return self.scalar(event, path)
        if kind is events.SequenceStartEvent:
            self.check_tag(event, _T + "seq", path)
            return self.sequence(path, depth)
        if kind is events.MappingStartEvent:
            self.check_tag(event, _T + "map", path)
            return self.mapping(path, depth)
        raise _Fatal(_pos(event), f"unexpected {kind.__name__}")  # pragma: no cover

    def alias(self, event: Any, path: Path, depth: int) -> Any:
        target = self.anchors.get(event.anchor)
        if target is None:
            raise _Fatal(
                _pos(event), f"unknown alias *{event.anchor} (define &{event.anchor} first)"
            )
        self.alias_nodes += target.size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise _Fatal(
                _pos(event),
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (a YAML alias bomb?)",
            )
        if depth + target.depth > MAX_DEPTH:
            raise _Fatal(_pos(event), f"nesting is deeper than {MAX_DEPTH} levels")
        self.doc.positions[path] = _pos(event)
        self.expanded += target.size
        self.reach = max(self.reach, depth + target.depth - 1)
        return target.value

    def check_tag(self, event: Any, expected: str, path: Path) -> None:
        if event.tag not in (None, "!", expected):
            self.problems.append(self.doc.problem(path, f"tag {event.tag} is not allowed here"))

    def scalar(self, event: Any, path: Path) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolve(event.value, event.implicit[0])
        if tag in _TEXT_TAGS or tag == _T + "merge":
            return event.value
        if tag not in _SCALAR_TAGS:
            self.problems.append(self.doc.problem(path, f"tag {tag} is not allowed"))
            return None
        node = yaml.ScalarNode(tag, event.value)
        try:
            value = getattr(_CONSTRUCT, "construct_yaml_" + tag[len(_T) :])(node)
        except (ValueError, TypeError, yaml.YAMLError):
            value = None
        if (value is None and tag != _T + "null") or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            self.problems.append(
                self.doc.problem(path, f"{event.value[:40]!r} is not a valid {tag[len(_T) :]}")
            )
            return None
        return value

    def sequence(self, path: Path, depth: int) -> list[Any]:
        items: list[Any] = []
        get_event = self.parser.get_event
        event = get_event()
        while type(event) is not events.SequenceEndEvent:
            items.append(self.node(event, (*path, len(items)), depth + 1))
            event = get_event()
        return items

    def mapping(self, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[Any] = []
        get_event = self.parser.get_event
        key_positions = self.doc.key_positions
        key_event = get_event()
        while type(key_event) is not events.MappingEndEvent:
            if type(key_event) is events.ScalarEvent and key_event.tag is None:
                self.nodes += 1  # the common case of `key`, inline
                key: str | None = key_event.value
            else:
                key = self.key(key_event, path, depth)
            where = (*path, key) if key is not None else (*path, "<key>")
            value = self.node(get_event(), where, depth + 1)
            if key is None:
                pass
            elif key == "<<" and key_event.tag is None and key_event.implicit[0]:
                merged.append(value)
            elif key in out:
                self.duplicate(key_event, path, key)
            else:
                out[key] = value
                key_positions[where] = _pos(key_event)
            key_event = get_event()
        return self.merge(out, merged, path) if merged else out

    def duplicate(self, key_event: Any, path: Path, key: str) -> None:
        line, _ = self.doc.key_positions[(*path, key)]
        self.problems.append(
            errors.Problem(
                file=self.doc.file,
                line=_pos(key_event)[0],
                col=_pos(key_event)[1],
                path=dotted((*path, key)),
                message=f"duplicate key {key!r} (first defined on line {line})",
            )
        )

    def key(self, event: Any, path: Path, depth: int) -> str | None:
        if type(event) is not events.ScalarEvent:
            start, reach = self.expanded, self.reach  # a key is no part of the mapping's size
            self.node(event, (*path, "<key>"), depth + 1)
            self.expanded, self.reach = start, reach
            self.problems.append(
                errors.Problem(
                    file=self.doc.file,
                    line=_pos(event)[0],
                    col=_pos(event)[1],
                    path=dotted(path),
                    message="a mapping key must be a plain string",
                )
            )
            return None
        self.nodes += 1
        if event.tag not in (None, "!", _T + "str"):
            self.problems.append(self.doc.problem(path, f"tag {event.tag} is not allowed on a key"))
        return str(event.value)

    def merge(self, explicit: dict[str, Any], merged: list[Any], path: Path) -> dict[str, Any]:
        """`<<: *base` or `<<: [*a, *b]`: earlier sources win, explicit keys win over all."""
        out: dict[str, Any] = {}
        for value in merged:
            for source in value if isinstance(value, list) else [value]:
                if not isinstance(source, dict):
                    self.problems.append(self.doc.problem(path, "'<<' merges only mappings"))
                    continue
                for k, v in source.items():
                    out.setdefault(k, v)
        out.update(explicit)
        return out


def load_file(path: str | os.PathLike[str]) -> Document:
    """Read and parse a YAML file safely (size, encoding and YAML checks); no schema."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_BYTES:
                raise too_big(file, size)
            raw = fh.read(MAX_BYTES + 1)  # special files may report size 0
    except OSError as exc:
        raise _invalid(file, (0, 0), _unreadable(exc)) from None
    if len(raw) > MAX_BYTES:
        raise too_big(file, len(raw))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise _invalid(file, (line, col), "the file is not UTF-8 text") from None
    return load_text(text, file=file)


def load_text(text: str, *, file: str) -> Document:
    """Parse one YAML document into a `Document`; raise `errors.WorkflowInvalid` if hostile."""
    doc = Document(file=file, data=None)
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > MAX_BYTES else 0
    if size > MAX_BYTES:
        raise too_big(file, size)
    parser = _PARSER(text)
    try:
        builder = _Builder(parser, doc)
        doc.data = _document(parser, builder)
    except _Fatal as exc:
        raise _invalid(file, exc.pos, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        raise _invalid(file, pos, f"YAML syntax error: {message}{_hint(text, exc)}") from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        pos = (before.count("\n") + 1, exc.position - before.rfind("\n"))
        raise _invalid(file, pos, f"not readable as YAML: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise _invalid(file, (1, 1), f"not readable as YAML: {_first_line(exc)}") from None
    finally:
        getattr(parser, "dispose", lambda: None)()
    if builder.problems:
        raise errors.WorkflowInvalid(builder.problems)
    return doc


def _document(parser: Any, builder: _Builder) -> Any:
    parser.get_event()  # StreamStart
    if isinstance(parser.peek_event(), events.StreamEndEvent):
        return None
    parser.get_event()  # DocumentStart
    value = builder.node(parser.get_event(), (), 0)
    parser.get_event()  # DocumentEnd
    if not isinstance(parser.peek_event(), events.StreamEndEvent):
        raise _Fatal(_pos(parser.peek_event()), "expected one YAML document, found more")
    return value


def too_big(file: str, size: int) -> errors.WorkflowInvalid:
    """The error for a file over MAX_BYTES."""
    return _invalid(
        file, (1, 1), f"the file is {size:,} bytes; the limit is {MAX_BYTES:,} bytes (10 MiB)"
    )


def _invalid(file: str, pos: Pos, message: str) -> errors.WorkflowInvalid:
    return errors.WorkflowInvalid(
        [errors.Problem(file=file, line=pos[0], col=pos[1], message=message)]
    )


def _unreadable(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file; check the path (it is relative to the current folder)"
    if isinstance(exc, IsADirectoryError):
        return "this is a folder; name a workflow file inside it"
    if isinstance(exc, PermissionError):
        return "permission denied; make the file readable by this user"
    return f"cannot read the file: {exc.strerror or exc}"


def _hint(text: str, exc: yaml.MarkedYAMLError) -> str:
    """The fix, in plain words, for the YAML mistakes people make most."""
    problem = str(exc.problem or "")
    mark = exc.problem_mark
    char = ""
    if mark is not None and 0 <= mark.index < len(text):
        char = text[mark.index]
    if char == "\t" or (
        "cannot start any token" in problem and mark is not None and "\t" in _line(text, mark.line)
    ):
        return "; tabs cannot indent YAML: use spaces"
    if "mapping values are not allowed" in problem:
        return (
            "; a plain value cannot contain ': ' (colon and space): quote the whole value,"
            ' e.g. run: "echo a: b", or use a block scalar (run: |)'
        )
    if "found undefined alias" in problem or "found unknown escape character" in problem:
        return "; quote the value in single quotes to take it literally"
    if "could not find expected ':'" in problem:
        return (
            "; every key needs a ':' after it, and a value on one line must be quoted if it has ':'"
        )
    if "expected <block end>, but found" in problem or "did not find expected key" in problem:
        return "; check the indentation: items of one list or mapping must line up"
    return ""


def _line(text: str, index: int) -> str:
    lines = text.splitlines()
    return lines[index] if 0 <= index < len(lines) else ""


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def dump(data: Any, stream: Any) -> None:
    """Write plain data (dicts, lists, scalars) as YAML, keys in the given order."""
    yaml.safe_dump(data, stream, sort_keys=False, allow_unicode=True)
