"""The workflow JSON Schema: found in a wheel or the source tree, and its problems located."""

from __future__ import annotations

import copy
import importlib.resources
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import errors, schema, workflow, yamlsafe

ROOT = Path(__file__).resolve().parents[2]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema.load_schema())


def test_schema_found_via_importlib_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "runner"
    shutil.copytree(ROOT / "schemas", pkg / "schemas")
    monkeypatch.setattr(importlib.resources, "files", lambda _: pkg)
    assert schema.schema_dir() == pkg / "schemas"


def test_schema_falls_back_to_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.resources, "files", lambda _: tmp_path)
    found = schema.schema_dir()
    assert Path(str(found)) == ROOT / "schemas"
    assert json.loads((found / schema.WORKFLOW_SCHEMA).read_text())["$schema"].endswith(
        "2020-12/schema"
    )


def test_problems_are_located_and_human() -> None:
    text = (
        "apiVersion: runner/v1\nkind: Workflw\nmetadata: {name: Bad_Name}\nspec:\n"
        "  env: {OK: [1]}\n  tasks:\n    - name: b\n      retries: {limit: 2, bogus: 1}\n"
        "      call: x\n"
    )
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.loads(text, file="w.yaml")
    assert info.value.message.splitlines() == [
        "w.yaml:2:7: kind: expected 'Workflow', got 'Workflw'",
        "w.yaml:3:18: metadata.name: 'Bad_Name' is not valid; use lowercase letters, digits and "
        "'-', at most 63 characters, e.g. nightly-etl",
        "w.yaml:5:13: spec.env.OK: [1] is not valid; a value is a string, number or boolean, "
        "or a secret reference {fromEnv: NAME} or {fromFile: PATH}",
        "w.yaml:8:27: tasks.b.retries: unknown key 'bogus' (known: backoff, limit)",
        "w.yaml:9:13: tasks.b.call: 'x' is not valid; use module.path:function, e.g. "
        "mypkg.reports:build",
    ]
    assert info.value.problems[0].as_dict()["path"] == "kind"


def test_suggest_offers_close_names() -> None:
    assert schema.suggest("dependson", ["depends", "run"]) == "; did you mean 'depends'?"
    assert schema.suggest("zzz", ["a", "b"]) == " (known: a, b)"


_VALID: dict[str, Any] = {
    "apiVersion": "runner/v1",
    "kind": "Workflow",
    "metadata": {"name": "fast", "labels": {"team": "data"}},
    "spec": {
        "params": {"date": "2026-01-01"},
        "env": {"A": 1},
        "defaults": {"retries": 2, "timeout": "10m", "shell": ["bash", "-c"]},
        "schedule": "0 2 * * *",
        "concurrencyPolicy": "Forbid",
        "tasks": [
            {"name": "a", "run": "echo", "matrix": {"k": [1, 2], "include": [{"k": 3}]}},
            {"name": "b", "args": ["x", 1], "depends": ["a"], "timeout": 5},
            {
                "name": "c",
                "call": "m.n:f",
                "with": {"x": [1]},
                "retries": {"limit": 3, "backoff": {"delay": "2s", "factor": 2, "max": "1m"}},
                "semaphore": {"name": "s", "limit": 1},
            },
        ],
    },
}
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    ["name", "run", "args", "call", "depends", "retries", "limit", "k", "include", "A", "x"]
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            out += _paths(item, (*path, key))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fast_check_agrees_with_jsonschema(data: st.DataObject) -> None:
    doc: Any = copy.deepcopy(_VALID)
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if not path:
            doc = data.draw(_JSON)
            break
        if action == "replace":
            parent[path[-1]] = data.draw(_JSON | st.sampled_from([[], {}, "", "x", 1.0, True]))
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][data.draw(_KEYS)] = data.draw(_JSON)
    slow = not list(schema._validator(schema.WORKFLOW_SCHEMA).iter_errors(doc))
    assert schema.is_valid(doc) == slow


def test_fast_check_accepts_the_shipped_workflows() -> None:
    for path in sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("workflows/*.yaml")]):
        assert schema.is_valid(yamlsafe.load_file(path).data), path


def test_fast_check_leaves_unknown_keywords_to_jsonschema() -> None:
    with pytest.raises(schema._Unsupported):
        schema._compile({"type": "string", "format": "date"})
    assert schema._compile({"type": "string", "x-hint": "h", "description": "d"})("s")
