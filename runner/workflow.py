"""Workflow files: load and check them (`load`), and expand them into a plan (`plan`, `load_plan`).

YAML (runner.yamlsafe) -> JSON Schema (runner.schema) -> semantic checks -> matrix expansion and
plan-time templating (runner.planning, runner.templating) -> DAG (runner.dag) -> `models.Plan`.
Every problem of a file is collected and raised at once as `errors.WorkflowInvalid`
(`errors.CycleDetected` when the tasks form a cycle), each located at the YAML node at fault:
`FILE:LINE:COL: message`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner import (
    conditions,
    cronexpr,
    dag,
    errors,
    include,
    models,
    planning,
    schema,
    subrun,
    templating,
    yamlsafe,
)

TEXT_FIELDS = ("run", "args", "with", "workdir")
Path = yamlsafe.Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Workflow:
    """A parsed, schema-valid, checked workflow file; keeps node positions for later messages."""

    source: str
    doc: yamlsafe.Document

    @property
    def name(self) -> str:
        return str(self.doc.data["metadata"]["name"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.doc.data["spec"]
        return spec

    @property
    def tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.spec["tasks"]
        return tasks


def load(path: str | os.PathLike[str]) -> Workflow:
    """Read, validate and check a workflow file; `errors.WorkflowInvalid` lists all problems."""
    return check(yamlsafe.load_file(path))


def loads(text: str, *, file: str = "<string>") -> Workflow:
    """`load` for YAML text already in memory."""
    return check(yamlsafe.load_text(text, file=file))


def check(doc: yamlsafe.Document) -> Workflow:
    """Schema and semantic checks of a parsed document (its `include:` files merged in)."""
    doc = include.expand(doc)
    problems = schema.validate(doc.data, file=doc.file, locate=_locator(doc))
    if problems:
        raise errors.WorkflowInvalid(problems)
    checker = _Checker(doc)
    checker.run()
    if checker.cycle:
        raise errors.CycleDetected(checker.problems, checker.cycle)
    if checker.problems:
        raise errors.WorkflowInvalid(checker.problems)
    return Workflow(source=doc.file, doc=doc)


def _locator(doc: yamlsafe.Document) -> schema.Locate:
    return lambda path, at_key: doc.key_pos(path) if at_key else doc.pos(path)


class _Checker:
    """Semantic checks of a schema-valid document: names, dependencies, cycles, time, templates."""

    def __init__(self, doc: yamlsafe.Document) -> None:
        self.doc = doc
        self.spec: dict[str, Any] = doc.data["spec"]
        self.tasks: list[dict[str, Any]] = self.spec["tasks"]
        self.problems: list[errors.Problem] = []
        self.cycle: list[str] | None = None
        self.index: dict[str, int] = {}
        self.matrix: dict[str, bool] = {}  # task name -> is a matrix task

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, at_key=at_key))

    def run(self) -> None:
        self.problems += planning.nul_problems(self.doc)
        self.check_names()
        graph = self.check_depends()
        self.cycle = dag.find_cycle(graph)
        if self.cycle:
            first = ("spec", "tasks", self.index[self.cycle[0]], "depends")
            self.add(first, "dependency cycle: " + " -> ".join(self.cycle) + " (-> = depends on)")
        self.check_time()
        self.check_hooks()
        self.check_matrices()
        self.matrix = {name: "matrix" in self.tasks[i] for name, i in self.index.items()}
        for i, task in enumerate(self.tasks):
            if self.index.get(task["name"]) == i:
                self.check_templates(i, task, graph)
                self.check_dynamic(i, task, graph)

    def check_hooks(self) -> None:
        """`missed_tick` and `when` need a schedule; `when` names this file's (docs/HOOKS.md)."""
        name = self.doc.data["metadata"]["name"]
        for i, hook in enumerate(self.spec.get("hooks") or ()):
            at: Path = ("spec", "hooks", i)
            if "schedule" not in self.spec and "missed_tick" in hook["on"]:
                where = (*at, "on", hook["on"].index("missed_tick"))
                self.add(where, "missed_tick needs spec.schedule: add one or remove missed_tick")
            when = hook.get("when")
            if when is not None and ("schedule" not in self.spec or when != name):
                self.add(
                    (*at, "when"),
                    f"when: {when!r} names no schedule of this file; a workflow's schedule is "
                    f"named after it ({name!r}, with spec.schedule set)",
                )

    def check_names(self) -> None:
        for i, task in enumerate(self.tasks):
            first = self.index.setdefault(task["name"], i)
            if first != i:
                line = self.doc.pos(("spec", "tasks", first, "name"))[0]
                self.add(
                    ("spec", "tasks", i, "name"),
                    f"duplicate task name {task['name']!r} (first used on line {line})",
                )

    def check_depends(self) -> dag.Graph:
        for i, task in enumerate(self.tasks):
            for j, dep in enumerate(task.get("depends", ())):
                where = ("spec", "tasks", i, "depends", j)
                if dep == task["name"]:
                    self.add(where, f"task {dep!r} depends on itself")
                elif dep not in self.index:
                    hint = schema.suggest(dep, self.index)
                    self.add(where, f"tasks.{task['name']}: unknown dependency {dep!r}{hint}")
        depends = {
            t["name"]: [d for d in t.get("depends", ()) if d != t["name"]] for t in self.tasks
        }
        return dag.from_depends(depends)

    def check_time(self) -> None:
        for path, value in _durations(self.spec):
            try:
                cronexpr.parse_duration(value)
            except ValueError as exc:
                self.add(path, str(exc))
        if "schedule" in self.spec:
            error = cronexpr.check_schedule(self.spec["schedule"])
            if error:
                self.add(("spec", "schedule"), error)
        if "timezone" in self.spec:
            error = cronexpr.check_timezone(self.spec["timezone"])
            if error:
                self.add(("spec", "timezone"), error)

    def check_matrices(self) -> None:
        total = 0
        limit = planning.instance_limit(self.spec)
        for i, task in enumerate(self.tasks):
            matrix = task.get("matrix")
            if matrix is None:
                total += 1
                continue
            where = ("spec", "tasks", i, "matrix")
            total += planning.matrix_size(matrix)
            if total > limit:
                self.add(where, _too_many(limit))
                return
            for message in planning.check_matrix(task["name"], matrix):
                self.add(where, message)

    def check_templates(self, i: int, task: dict[str, Any], graph: dag.Graph) -> None:
        params = self.spec.get("params", {})
        keys = planning.matrix_keys(task.get("matrix"))
        upstream: set[str] | None = None  # computed only when needed: ancestors are costly
        for path, text in self.texts(i, task):
            if "${{" not in text:  # every reference and every problem starts with one
                continue
            refs, messages = templating.references(text)
            if path[-1] == "run":
                messages += templating.shell_problems(text)
            for message in messages:
                self.add(path, message)
            for ref in refs:
                if ref.scope == "tasks" and upstream is None:
                    upstream = dag.upstream(graph, task["name"])
                error = templating.check_ref(
                    ref, params=params, matrix_keys=keys, upstream=upstream or (), tasks=self.matrix
                )
                if ref.scope == "item" and "forEach" not in task:
                    error = "item is defined only in a task with forEach"
                if error:
                    self.add(path, f"{ref.text}: {error}")

    def check_dynamic(self, i: int, task: dict[str, Any], graph: dag.Graph) -> None:
        """`if` conditions and `forEach` references (docs/WORKFLOW.md)."""
        if "if" not in task and "forEach" not in task:
            return
        upstream = dag.upstream(graph, task["name"])
        keys = planning.matrix_keys(task.get("matrix"))

        def check_ref(ref: templating.Ref) -> str | None:
            if ref.scope == "item":
                return None if "forEach" in task else "item is defined only in a task with forEach"
            params = self.spec.get("params", {})
            return templating.check_ref(
                ref, params=params, matrix_keys=keys, upstream=upstream, tasks=self.matrix
            )

        if "if" in task:
            for offset, message in conditions.problems(task["if"], check_ref):
                self.add_at(("spec", "tasks", i, "if"), offset, message)
        if "forEach" in task:
            self.check_for_each(i, task, check_ref)

    def check_for_each(self, i: int, task: dict[str, Any], check_ref: conditions.CheckRef) -> None:
        path: Path = ("spec", "tasks", i, "forEach")
        if "matrix" in task:
            self.add(path, "a task cannot have both forEach and matrix; use one of them")
        inner, offset = conditions.source(task["forEach"])
        try:
            ref = templating.parse(inner)
        except templating.TemplateError:
            ref = None
        if ref is None or ref.scope != "tasks":
            message = "forEach takes one ${{ tasks.NAME.outputs.KEY }} of an upstream task"
            self.add_at(path, offset, message)
            return
        error = check_ref(ref)
        if error:
            self.add_at(path, offset, f"forEach: {ref.text}: {error}")

    def add_at(self, path: Path, offset: int, message: str) -> None:
        """A problem `offset` characters into the string at `path` (when it is on one line)."""
        p = self.doc.problem(path, message)
        text = planning.get_in(self.doc.data, path)
        if isinstance(text, str) and "\n" not in text:
            p = dataclasses.replace(p, col=p.col + offset)
        self.problems.append(p)

    def texts(self, i: int, task: dict[str, Any]) -> Iterator[tuple[Path, str]]:
        """Every templated string of a task (its own fields and the defaults it inherits)."""
        own: Path = ("spec", "tasks", i)
        for key in TEXT_FIELDS:
            if key in task:
                yield from templating.strings_at(task[key], (*own, key))
            elif key in self.spec.get("defaults", {}):
                yield from templating.strings_at(
                    self.spec["defaults"][key], ("spec", "defaults", key)
                )
        yield from self.shared_env
        for name, value in task.get("env", {}).items():
            if not isinstance(value, dict):  # a secret reference is no template
                yield (*own, "env", name), templating.to_text(value)

    @functools.cached_property
    def shared_env(self) -> list[tuple[Path, str]]:
        """spec.env and spec.defaults.env: given to every task."""
        return [
            ((*base, name), templating.to_text(value))
            for base in (("spec", "env"), ("spec", "defaults", "env"))
            for name, value in (planning.get_in(self.doc.data, base) or {}).items()
            if not isinstance(value, dict)  # a secret reference is no template
        ]


def _durations(spec: Mapping[str, Any]) -> Iterator[tuple[Path, Any]]:
    owners: list[tuple[Path, Mapping[str, Any]]] = [(("spec",), spec)]
    if "defaults" in spec:
        owners.append((("spec", "defaults"), spec["defaults"]))
    owners += [(("spec", "tasks", i), t) for i, t in enumerate(spec["tasks"])]
    owners += [(("spec", "hooks", i), h) for i, h in enumerate(spec.get("hooks") or ())]
    for path, owner in owners:
        if "timeout" in owner:
            yield (*path, "timeout"), owner["timeout"]
        backoff = (
            owner.get("retries", {}).get("backoff", {})
            if isinstance(owner.get("retries"), dict)
            else {}
        )
        for key in ("delay", "max"):
            if key in backoff:
                yield (*path, "retries", "backoff", key), backoff[key]


def resolve_params(
    workflow: Workflow,
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
) -> dict[str, Any]:
    """Defaults from spec.params, then `params_file` (a YAML mapping), then `params`."""
    return planning.resolve_params(workflow.doc, params=params, params_file=params_file)


def plan(
    workflow: Workflow,
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
    anchor: str | os.PathLike[str] | None = None,
) -> models.Plan:
    """Expand a checked workflow into a `models.Plan` for one set of params.

    Params come from `spec.params` defaults, overridden by `params_file` (a YAML mapping of
    names to values), then by `params` (`--param NAME=VALUE`); an unknown name is an
    `errors.WorkflowInvalid`. `Plan.tasks` is in stable topological order.
    With `anchor` (a folder: the workflow file's), every task's working directory is made
    absolute against it: a task without `workdir:` runs there, a relative `workdir:` is taken
    from it, an absolute one stays. What `runner apply FILE` and the scheduler store, so
    relative paths and `call:` modules resolve next to the file, whatever the worker's current
    folder (docs/WORKFLOW.md, "What a task sees").
    """
    folder = None if anchor is None else os.fspath(anchor)
    return _plan(workflow, params=params, params_file=params_file, stack=(), anchor=folder)


def _plan(
    workflow: Workflow,
    *,
    params: Mapping[str, str] | None,
    params_file: str | None,
    stack: tuple[str, ...],
    anchor: str | None = None,
) -> models.Plan:
    """`plan`, inside the sub-runs of the files in `stack` (outer first)."""
    values = resolve_params(workflow, params=params, params_file=params_file)
    doc, source = workflow.doc, workflow.source
    built = planning.build_plan(doc, source=source, params=values, anchor=anchor)

    def plan_child(file: str, child: Mapping[str, str], inner: tuple[str, ...]) -> models.Plan:
        return _plan(load(file), params=child, params_file=None, stack=inner)

    here = (*stack, os.path.realpath(workflow.source))
    return subrun.attach(built, workflow.doc, stack=here, plan_child=plan_child)


def load_plan(
    path: str | os.PathLike[str],
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
    anchor: str | os.PathLike[str] | None = None,
) -> models.Plan:
    """`plan(load(path), params=..., params_file=..., anchor=...)`."""
    return plan(load(path), params=params, params_file=params_file, anchor=anchor)


def _too_many(limit: int) -> str:
    text = f"the plan would have more than {limit:,} task instances"
    if limit < planning.MAX_STREAMED:
        text += (
            " (a plan with `cache:` or `workflow:` tasks, or a `schedule:`, is held in memory"
            f" whole; without them a plan may have {planning.MAX_STREAMED:,}:"
            ' docs/WORKFLOW.md, "Matrix")'
        )
    return text


plan_hash = planning.plan_hash
param_env = planning.param_env
