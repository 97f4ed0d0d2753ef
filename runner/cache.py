"""Cached tasks (docs/WORKFLOW.md "Cached tasks"): the two halves of a task's cache key.

When planning (`inputs`), on the submitting machine: each task gets a fingerprint, the sha256
of its spec as planned, its `cache.key`, the contents of the files its `cache.files` patterns
match (relative to the workflow file's folder) and the fingerprints of its dependencies, so a
changed file changes the fingerprint of its task and of every task downstream of it. A cached
task keeps its fingerprint in `CachePolicy.inputs_hash`.

When an attempt starts (`cache_key`), on the worker: the fingerprint plus the spec as rendered
for the attempt and the upstream outputs it reads. The worker looks the key up in the store
before starting a process (see runner.worker._slots).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner import cronexpr, models, templating

MAX_FILES = 100_000  # files one task's patterns may match


class CacheFileError(ValueError):
    """A `cache.files` pattern that cannot be read; the message says why."""

    def __init__(self, message: str, *, task: str = "") -> None:
        super().__init__(message)
        self.task = task  # the task's name, once known


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_hash(patterns: Iterable[str], *, base: Path) -> str:
    """sha256 over the relative path and contents of every file the patterns match under
    `base` (`**` spans folders), in sorted order. Raises CacheFileError."""
    h = hashlib.sha256()
    for pattern in patterns:
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise CacheFileError(
                f"{pattern!r}: use a pattern relative to the workflow file's folder, inside it"
            )
        h.update(f"pattern:{pattern}\0".encode())
        matches = sorted(p for p in base.glob(pattern) if p.is_file())
        if len(matches) > MAX_FILES:
            raise CacheFileError(f"{pattern!r} matches more than {MAX_FILES} files")
        for path in matches:
            h.update(f"file:{path.relative_to(base).as_posix()}\0".encode())
            try:
                h.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as exc:
                raise CacheFileError(f"{pattern!r}: cannot read {path.name}: {exc}") from None
    return h.hexdigest()


def policy(
    value: Mapping[str, Any], *, params: Mapping[str, Any], matrix: Mapping[str, Any]
) -> models.CachePolicy:
    """A task's `cache:` mapping as a policy (its fingerprint is filled by `inputs`).
    Raises templating.TemplateError for a bad template in `key`."""
    text = templating.to_text(value.get("key", ""))
    key = templating.render(text, params=params, matrix=matrix, quote=False)
    max_age = value.get("maxAge")
    return models.CachePolicy(
        key=key,
        files=tuple(value.get("files", ())),
        max_age=None if max_age is None else cronexpr.parse_duration(max_age),
    )


def inputs(specs: Iterable[models.TaskSpec], *, base: Path) -> list[models.TaskSpec]:
    """The specs (in topological order) with each cached task's fingerprint filled in.
    Raises CacheFileError naming the task instance."""
    prints: dict[str, str] = {}
    out: list[models.TaskSpec] = []
    for spec in specs:
        own = ""
        if spec.cache is not None:
            try:
                own = files_hash(spec.cache.files, base=base)
            except CacheFileError as exc:
                raise CacheFileError(f"{spec.id}: {exc}", task=spec.name) from None
        body = {**spec.to_dict(), "cache": None if spec.cache is None else spec.cache.key}
        fingerprint = _digest([body, own, [prints[d] for d in spec.depends if d in prints]])
        prints[spec.id] = fingerprint
        if spec.cache is not None:
            spec = dataclasses.replace(
                spec, cache=dataclasses.replace(spec.cache, inputs_hash=fingerprint)
            )
        out.append(spec)
    return out


def cache_key(spec: models.TaskSpec, ctx: models.RunContext) -> str:
    """The full cache key of one attempt of a cached task (see the module docstring)."""
    assert spec.cache is not None
    rendered = templating.render_runtime(spec, ctx).to_dict()
    rendered.pop("cache", None)
    used = {tid: dict(sorted(o.items())) for tid, o in sorted(ctx.outputs.items())}
    return _digest([spec.cache.inputs_hash, spec.cache.key, rendered, used])


def fresh(entry: models.CacheEntry | None, policy_: models.CachePolicy, *, now: float) -> bool:
    """Whether a found entry may be reused under the task's `maxAge`."""
    if entry is None:
        return False
    return policy_.max_age is None or entry.created_at >= now - policy_.max_age


def refresh(plan: models.Plan) -> models.Plan:
    """The plan with every cached task set to run and record anew (`runner apply --no-cache`)."""

    def fresh(t: models.TaskSpec) -> models.TaskSpec:
        if t.cache is None:
            return t
        return dataclasses.replace(t, cache=dataclasses.replace(t.cache, refresh=True))

    return dataclasses.replace(plan, tasks=models.map_tasks(plan.tasks, fresh))
