"""`include:` (docs/WORKFLOW.md "Reusable files"): merge tasks and defaults from other files.

An included file is a YAML mapping with `tasks`, `defaults` and `include` (all optional).
Paths are relative to the including file. Its tasks are appended after the including file's
(in `include` order, each file before the files it includes); its defaults apply under the
including file's own (a later include wins over an earlier one, the including file over both).
The merged document keeps each node's position in the file it came from
(`Document.origins`), so every later problem reads `INCLUDED_FILE:LINE:COL`. A cycle, a
missing file or an invalid included file is an error at the `include` entry, or inside the
included file.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from runner import errors, schema, yamlsafe

Path = yamlsafe.Path
KEYS = ("include", "defaults", "tasks")
MAX_FILES = 100  # files one workflow may include, transitively
_PLACEHOLDER = {"name": "placeholder", "run": "true"}  # stands in for absent tasks when checking


def expand(doc: yamlsafe.Document) -> yamlsafe.Document:
    """The document with its includes merged in; unchanged without a (well-formed) `include`.
    Raises errors.WorkflowInvalid for problems of the included files."""
    data = doc.data
    if not isinstance(data, dict) or not _paths_ok(data.get("include")):
        return doc  # no include, or a malformed one: the schema reports it
    if not isinstance(data.get("spec"), dict):
        return doc
    seen: list[str] = []
    parts: list[yamlsafe.Document] = []
    for i, rel in enumerate(data["include"]):
        _collect(doc, ("include", i), rel, stack=[_real(doc.file)], seen=seen, parts=parts)
    return _merge(doc, parts)


def _paths_ok(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _real(file: str) -> str:
    return os.path.realpath(file)


def _collect(
    parent: yamlsafe.Document,
    at: Path,
    rel: str,
    *,
    stack: list[str],
    seen: list[str],
    parts: list[yamlsafe.Document],
) -> None:
    """Load `rel` (relative to `parent`), then what it includes (depth first), into `parts`."""
    file = os.path.normpath(os.path.join(os.path.dirname(parent.file), rel))
    real = _real(file)
    if real in stack:
        top = os.path.dirname(stack[0])  # the chain, relative to the workflow file's folder
        chain = " -> ".join(os.path.relpath(f, top) for f in [*stack, real])
        raise errors.WorkflowInvalid([parent.problem(at, f"include cycle: {chain}")])
    if len(seen) >= MAX_FILES:
        raise errors.WorkflowInvalid([parent.problem(at, f"more than {MAX_FILES} included files")])
    if not os.path.isfile(file):
        message = f"cannot include {rel!r}: no such file (paths are relative to this file's folder)"
        raise errors.WorkflowInvalid([parent.problem(at, message)])
    seen.append(real)
    doc = yamlsafe.load_file(file)
    _check(doc)
    parts.append(doc)  # a file's tasks, then those of the files it includes
    for i, nested in enumerate(doc.data.get("include", ())):
        _collect(doc, ("include", i), nested, stack=[*stack, real], seen=seen, parts=parts)


def _check(doc: yamlsafe.Document) -> None:
    """The included file's shape: its keys, then its tasks and defaults by the workflow schema,
    located in the included file."""
    data = doc.data
    if not isinstance(data, dict):
        message = "an included file is a mapping with tasks, defaults and include"
        raise errors.WorkflowInvalid([doc.problem((), message)])
    problems = [
        doc.problem((key,), f"unknown key {key!r}{schema.suggest(str(key), KEYS)}", at_key=True)
        for key in data
        if key not in KEYS
    ]
    if "include" in data and not _paths_ok(data["include"]):
        problems.append(doc.problem(("include",), "include: give a list of file paths"))
    wrapper = {
        "apiVersion": "runner/v1",
        "kind": "Workflow",
        "metadata": {"name": "included"},
        "spec": {"tasks": data.get("tasks", [_PLACEHOLDER]), "defaults": data.get("defaults", {})},
    }

    def locate(path: Path, at_key: bool) -> tuple[int, int]:
        inner = path[1:] if path[:1] == ("spec",) else path
        return doc.key_pos(inner) if at_key else doc.pos(inner)

    problems += schema.validate(wrapper, file=doc.file, locate=locate)
    if problems:
        raise errors.WorkflowInvalid(problems)


def _merge(doc: yamlsafe.Document, parts: list[yamlsafe.Document]) -> yamlsafe.Document:
    """A new document: `doc`'s data with the parts' tasks and defaults, positions re-keyed."""
    data = copy.copy(doc.data)
    spec = dict(data["spec"])
    data["spec"] = spec
    merged = yamlsafe.Document(
        file=doc.file,
        data=data,
        positions=dict(doc.positions),
        key_positions=dict(doc.key_positions),
        origins=dict(doc.origins),
    )
    tasks = list(spec.get("tasks") or [])
    own_defaults = dict(spec.get("defaults") or {})
    defaults: dict[str, Any] = {}
    for part in parts:
        moves: list[tuple[Path, Path]] = []
        for j, task in enumerate(part.data.get("tasks", ())):
            moves.append((("tasks", j), ("spec", "tasks", len(tasks))))
            tasks.append(task)
        for key, value in (part.data.get("defaults") or {}).items():
            if key not in own_defaults:
                moves.append((("defaults", key), ("spec", "defaults", key)))
                defaults[key] = value
        _move(merged, part, dict(moves))
    spec["tasks"] = tasks
    if defaults:
        spec["defaults"] = {**defaults, **own_defaults}
    return merged


def _move(merged: yamlsafe.Document, src: yamlsafe.Document, moves: dict[Path, Path]) -> None:
    """Record the positions of `src`'s nodes at each `old` path of `moves` (and below) as
    `merged`'s at the `new` one; `merged` reads them as `src`'s file's."""
    for table, into in (
        (src.positions, merged.positions),
        (src.key_positions, merged.key_positions),
    ):
        for path, pos in table.items():
            new = moves.get(path[:2])
            if new is not None:
                into[(*new, *path[2:])] = pos
    for new in moves.values():
        merged.origins[new] = src.file
