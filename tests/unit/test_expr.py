"""The `if:` expression language (runner.expr, runner.conditions): parsing, evaluation, and
that no input can run code or raise anything but a located ExprError."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import conditions, expr

NAMES: dict[str, Any] = {
    "params.env": "prod",
    "params.count": "12",
    "tasks.check.outputs.changed": "true",
    "tasks.check.outputs.empty": "",
    "item": {"id": 3, "tags": ["a", "b"]},
    "item.id": 3,
    "item.tags": ["a", "b"],
}


def value(source: str) -> Any:
    return expr.evaluate(expr.parse(source), NAMES.__getitem__)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("params.env == 'prod'", True),
        ('params.env != "prod"', False),
        ("params.env == 'prod' and tasks.check.outputs.changed == 'true'", True),
        ("params.env == 'dev' or not (tasks.check.outputs.changed == 'false')", True),
        ("params.count > 9", True),  # numeric text compares as a number
        ("params.count < 9.5", False),
        ("params.count >= 12 and params.count <= 12", True),
        ("'b' in item.tags", True),
        ("'c' not in item.tags", True),
        ("'ro' in params.env", True),
        ("item.id == 3", True),
        ("not not true", True),
        ("null == ''", True),
        ("-1 < 0", True),
        ("'abc' < 'abd'", True),
    ],
)
def test_evaluates(source: str, expected: bool) -> None:
    assert value(source) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("0", False), ("", False), ("null", False), ("x", True)],
)
def test_output_text_is_a_verdict(text: str, expected: bool) -> None:
    assert expr.truthy(text) is expected


@pytest.mark.parametrize(
    ("source", "offset", "message"),
    [
        ("", 0, "the expression is empty"),
        ("params.env ==", 13, "expected a value"),
        ("(a == 'b'", 0, "'(' without a matching ')'"),
        ("a = 'b'", 2, "unexpected character '='"),
        ("a == 'b' c", 9, "unexpected 'c'"),
        ("__import__('os').system('x')", 16, "unexpected character '.'"),
        ("a == 'unterminated", 5, "unexpected character"),
    ],
)
def test_syntax_errors_say_where(source: str, offset: int, message: str) -> None:
    with pytest.raises(expr.ExprError) as caught:
        expr.parse(source)
    assert message in str(caught.value)
    assert caught.value.offset == offset


def test_nesting_and_length_are_bounded() -> None:
    with pytest.raises(expr.ExprError, match="nested more than"):
        expr.parse("(" * 60 + "a" + ")" * 60)
    with pytest.raises(expr.ExprError, match="longer than"):
        expr.parse("a or " * 300 + "a")


def test_condition_reads_its_names_and_says_why_it_skips() -> None:
    text = "${{ params.env == 'prod' and tasks.check.outputs.changed == 'true' }}"
    assert conditions.output_names(text) == {"check"}
    ok, why = conditions.holds(
        text, run_id="r", params={"env": "dev"}, matrix={}, outputs={"check": {"changed": "true"}}
    )
    assert (ok, why) == (False, f"skipped: if {text} is false")


_ALPHABET = st.sampled_from(
    [*"abc_.()'\"=!<> -0123456789", "and", "or", "not", "in", "params.x", "__", "import"]
)


@contextlib.contextmanager
def no_code_runs() -> Iterator[None]:
    """eval, exec, compile, open and __import__ fail the test while the block runs."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the expression language must never import, eval or open")

    saved = {n: getattr(builtins, n) for n in ("__import__", "eval", "exec", "compile", "open")}
    for name in saved:
        setattr(builtins, name, refuse)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(builtins, name, original)


@settings(max_examples=400, deadline=None)
@given(source=st.lists(_ALPHABET, max_size=40).map(" ".join) | st.text(max_size=80))
def test_arbitrary_input_parses_or_fails_clearly_and_runs_nothing(source: str) -> None:
    error: expr.ExprError | None = None
    result: Any = None
    with no_code_runs():
        try:
            result = expr.evaluate(expr.parse(source), lambda name: "1")
        except expr.ExprError as exc:
            error = exc
    if error is not None:
        assert 0 <= error.offset <= len(source)
        assert str(error)
    else:
        assert isinstance(result, bool | str | int | float) or result is None
