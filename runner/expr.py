"""The condition language of `if:` (docs/WORKFLOW.md, "Conditions"): small, safe, never `eval`.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand)?
    operand := STRING | NUMBER | "true" | "false" | "null" | NAME | "(" expr ")"
    NAME    := IDENT ("." IDENT)*          e.g. params.env, tasks.check.outputs.changed, item.id

A hand-written tokenizer and recursive-descent parser build a tree of tuples; `evaluate` walks
it with a lookup for names. Nothing here imports, calls or looks up attributes, so no input can
run code: every failure is an `ExprError` carrying the offset it was found at.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

MAX_LENGTH = 1000  # characters of one expression
MAX_DEPTH = 50  # nesting of parentheses and `not`

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>'[^']*'|"[^"]*")
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<op>==|!=|<=|>=|<|>|\(|\))
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*)""",
    re.VERBOSE,
)
_WORDS = {"and", "or", "not", "in", "true", "false", "null"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">=", "in", "not in"}
_FALSY_TEXT = {"", "false", "0", "null"}

# A parsed node: ("lit", value) | ("name", dotted, offset) | ("not", node)
# | ("and"|"or", left, right) | ("cmp", op, left, right, offset)
Node = tuple[Any, ...]


class ExprError(ValueError):
    """An expression that cannot be parsed or evaluated; `offset` is where (0-based)."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string | number | op | name | word | end
    text: str
    offset: int


def tokenize(source: str) -> list[Token]:
    """The tokens of `source`, ending with an `end` token; ExprError on a stray character."""
    if len(source) > MAX_LENGTH:
        raise ExprError(f"the expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    out: list[Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ExprError(f"unexpected character {source[pos]!r}", pos)
        kind = match.lastgroup or "space"
        if kind != "space":
            text = match.group()
            out.append(Token("word" if text in _WORDS else kind, text, pos))
        pos = match.end()
    out.append(Token("end", "", len(source)))
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprError("the expression is empty", 0)
        node = self.or_()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {self.tok.text!r}", self.tok.offset)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.tok.text == "or" and self.tok.kind == "word":
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.tok.text == "and" and self.tok.kind == "word":
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.tok.kind == "word" and self.tok.text == "not":
            self.take()
            with self.nested():
                return ("not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        tok = self.tok
        op = tok.text
        if tok.kind == "word" and op == "not" and self.tokens[self.i + 1].text == "in":
            self.take()
            op = "not in"
        if op not in _COMPARE or tok.kind not in ("op", "word"):
            return left
        self.take()
        return ("cmp", op, left, self.operand(), tok.offset)

    def operand(self) -> Node:
        tok = self.take()
        if tok.kind == "string":
            return ("lit", tok.text[1:-1])
        if tok.kind == "number":
            return ("lit", float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "word" and tok.text in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[tok.text])
        if tok.kind == "name":
            return ("name", tok.text, tok.offset)
        if tok.text == "(" and tok.kind == "op":
            with self.nested():
                node = self.or_()
            if self.tok.text != ")":
                raise ExprError("'(' without a matching ')'", tok.offset)
            self.take()
            return node
        what = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise ExprError(f"expected a value, a name or '(' but found {what}", tok.offset)

    def nested(self) -> _Depth:
        return _Depth(self)


class _Depth:
    def __init__(self, parser: _Parser) -> None:
        self.parser = parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise ExprError(f"nested more than {MAX_DEPTH} deep", self.parser.tok.offset)

    def __exit__(self, *exc: object) -> None:
        self.parser.depth -= 1


def parse(source: str) -> Node:
    """The tree of `source`; ExprError (with its offset) when it is not an expression."""
    return _Parser(source).parse()


def names(node: Node) -> Iterator[tuple[str, int]]:
    """Every name in a tree, with its offset in the source."""
    if node[0] == "name":
        yield node[1], node[2]
    elif node[0] == "not":
        yield from names(node[1])
    elif node[0] in ("and", "or"):
        yield from names(node[1])
        yield from names(node[2])
    elif node[0] == "cmp":
        yield from names(node[2])
        yield from names(node[3])


Lookup = Callable[[str], Any]


def evaluate(node: Node, lookup: Lookup) -> Any:
    """The value of a tree; `lookup` gives a name's value (ExprError for an unknown one)."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        return lookup(node[1])
    if kind == "not":
        return not truthy(evaluate(node[1], lookup))
    if kind == "and":
        return truthy(evaluate(node[1], lookup)) and truthy(evaluate(node[2], lookup))
    if kind == "or":
        return truthy(evaluate(node[1], lookup)) or truthy(evaluate(node[2], lookup))
    _, op, left, right, offset = node
    return _compare(op, evaluate(left, lookup), evaluate(right, lookup), offset)


def check(source: str, lookup: Lookup) -> bool:
    """Parse and evaluate `source` as a condition: whether it holds."""
    return truthy(evaluate(parse(source), lookup))


def truthy(value: Any) -> bool:
    """A condition's verdict: false, 0, null, "" and the texts "false", "0", "null" are false
    (outputs are text: `tasks.check.outputs.changed` may be "false")."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY_TEXT
    return bool(value) if isinstance(value, bool | int | float | list | dict) else value is not None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _compare(op: str, left: Any, right: Any, offset: int) -> bool:
    if op in ("in", "not in"):
        found = _contains(right, left)
        return found if op == "in" else not found
    a, b = _number(left), _number(right)
    if a is None or b is None:  # text comparison: outputs and params are text
        x: Any = _text(left)
        y: Any = _text(right)
    else:
        x, y = a, b
    if op == "==":
        return bool(x == y)
    if op == "!=":
        return bool(x != y)
    if op == "<":
        return bool(x < y)
    if op == "<=":
        return bool(x <= y)
    if op == ">":
        return bool(x > y)
    if op == ">=":
        return bool(x >= y)
    raise ExprError(f"unknown operator {op!r}", offset)  # pragma: no cover - parser's set


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, list):
        return any(_compare("==", value, v, 0) for v in container)
    if isinstance(container, dict):
        return _text(value) in container
    return _text(value) in _text(container)
