"""The workflow JSON Schema: found in a wheel or the source tree, and its problems located."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from runner import errors, schema, workflow

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
        "w.yaml:5:13: spec.env.OK: expected a string or a number or a boolean, got a list",
        "w.yaml:8:27: tasks.b.retries: unknown key 'bogus' (known: backoff, limit)",
        "w.yaml:9:13: tasks.b.call: 'x' is not valid; use module.path:function, e.g. "
        "mypkg.reports:build",
    ]
    assert info.value.problems[0].as_dict()["path"] == "kind"


def test_suggest_offers_close_names() -> None:
    assert schema.suggest("dependson", ["depends", "run"]) == "; did you mean 'depends'?"
    assert schema.suggest("zzz", ["a", "b"]) == " (known: a, b)"
