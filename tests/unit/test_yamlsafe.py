"""Hostile YAML is refused quickly with a located problem (runner.yamlsafe)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from runner import errors, planview, workflow, yamlsafe

BOMB = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", *list("abcdefgh")], "abcdefghi", strict=True)
)


def _problem(text: str) -> str:
    with pytest.raises(errors.WorkflowInvalid) as info:
        yamlsafe.load_text(text, file="w.yaml")
    return info.value.message


def test_positions_of_values_and_keys_are_recorded() -> None:
    doc = yamlsafe.load_text("a:\n  b: [1, {c: x}]\n", file="w.yaml")
    assert doc.pos(("a", "b", 1, "c")) == (2, 14)
    assert doc.key_pos(("a", "b")) == (2, 3)
    assert doc.pos(("a", "b", 1, "missing")) == (2, 10)  # nearest ancestor


def test_alias_bomb_is_rejected_fast_through_the_whole_pipeline() -> None:
    text = (
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: b}\nspec:\n  params:\n"
        + "".join("    " + line + "\n" for line in BOMB.splitlines())
    )
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(errors.WorkflowInvalid, match="alias bomb"):
        _whole_pipeline(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 50 * 1024 * 1024


def _whole_pipeline(text: str) -> str:
    return json.dumps(planview.plan_to_json(workflow.plan(workflow.loads(text, file="w.yaml"))))


def test_modest_aliases_still_work() -> None:
    doc = yamlsafe.load_text("base: &b {x: 1}\nuse: {<<: *b, y: 2}\nagain: *b\n", file="w")
    assert doc.data == {"base": {"x": 1}, "use": {"x": 1, "y": 2}, "again": {"x": 1}}


def test_deep_nesting_is_a_clean_error() -> None:
    assert "nesting" in _problem("[" * 100_000)  # libyaml stops at 1000 levels, we at 100
    assert "nesting is deeper" in _problem("a: " + "{b: " * 200 + "1" + "}" * 200)


def test_duplicate_keys_are_errors_at_the_second_key() -> None:
    assert (
        _problem("a: 1\nb: 2\na: 3\n") == "w.yaml:3:1: duplicate key 'a' (first defined on line 1)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['echo pwned']",
        "a: !!python/name:os.system",
        "a: !custom x",
        "a: !!set {x: null}",
    ],
)
def test_object_building_tags_are_rejected(text: str) -> None:
    assert "is not allowed" in _problem(text)


def test_oversized_text_is_refused() -> None:
    assert "the limit is 10,485,760 bytes" in _problem("#" * (11 * 1024 * 1024))


def test_syntax_errors_and_odd_documents_are_located() -> None:
    assert _problem("a: [1\n").startswith("w.yaml:2:1: YAML syntax error")
    assert "one YAML document" in _problem("--- 1\n--- 2\n")
    assert "plain string" in _problem("{[1]: 2}")
    assert _problem("a: 1\nb: \x00\n").startswith("w.yaml:2:4: not readable as YAML")
    assert "unknown alias" in _problem("a: *nope")
    assert "not a valid float" in _problem("a: 1.0e+999")


def test_timestamps_stay_text_and_booleans_are_yaml_1_1() -> None:
    assert yamlsafe.load_text("d: 2026-01-01\nb: yes\n", file="w").data == {
        "d": "2026-01-01",
        "b": True,
    }


@pytest.mark.parametrize(("copies", "ok"), [(10_000, True), (10_001, False)])
def test_alias_expansion_limit_counts_every_node_of_the_target(copies: int, ok: bool) -> None:
    # the anchored list is 10 nodes (itself and 9 items): 10,000 copies reach the limit exactly
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*a"] * copies) + "]\n"
    if ok:
        assert len(yamlsafe.load_text(text, file="w.yaml").data["b"]) == copies
    else:
        assert "alias bomb" in _problem(text)


@pytest.mark.parametrize(("levels", "ok"), [(96, True), (97, False)])
def test_nesting_through_an_alias_counts_the_target_depth(levels: int, ok: bool) -> None:
    # *a sits at depth `levels` + 1 and its target is 3 levels deep ([[1]] plus its item)
    text = "a: &a [[1]]\nb: " + "[" * levels + "*a" + "]" * levels + "\n"
    if ok:
        yamlsafe.load_text(text, file="w.yaml")
    else:
        assert "nesting is deeper than 100 levels" in _problem(text)


def test_anchor_inside_a_complex_key_does_not_count_towards_its_mapping() -> None:
    assert "a mapping key must be a plain string" in _problem("? &k [1, 2]\n: 1\nb: *k\n")


@pytest.mark.parametrize(
    ("text", "where", "fix"),
    [
        ("a:\n\tb: 1\n", "w.yaml:2:1:", "tabs cannot indent YAML: use spaces"),
        ("run: echo a: b\n", "w.yaml:1:12:", "quote the whole value"),
        ("a:\n  - b\n c: d\n", "w.yaml:3:2:", "check the indentation"),
    ],
)
def test_common_yaml_mistakes_keep_the_position_and_say_the_fix(
    text: str, where: str, fix: str
) -> None:
    with pytest.raises(errors.WorkflowInvalid) as info:
        yamlsafe.load_text(text, file="w.yaml")
    assert info.value.message.startswith(where)
    assert fix in info.value.message


def test_a_missing_file_has_no_made_up_position(tmp_path: Path) -> None:
    with pytest.raises(errors.WorkflowInvalid) as info:
        yamlsafe.load_file(tmp_path / "nope.yaml")
    expected = "no such file; check the path (it is relative to the current folder)"
    assert info.value.message == f"{tmp_path / 'nope.yaml'}: {expected}"
