"""Workflow files: load and check them (`load`), and expand them into a plan (`plan`, `load_plan`).

YAML (runner.yamlsafe) -> JSON Schema (runner.schema) -> semantic checks -> matrix expansion and
plan-time templating (runner.templating) -> DAG (runner.dag) -> `models.Plan`. Every problem of a
file is collected and raised at once as `errors.WorkflowInvalid` (`errors.CycleDetected` when the
tasks form a cycle), each located at the YAML node at fault: `FILE:LINE:COL: message`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner import cronexpr, dag, errors, models, schema, templating, yamlsafe

MAX_INSTANCES = 100_000  # task instances of one plan, after matrix expansion
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
    """Schema and semantic checks of a parsed document."""
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
        self.check_names()
        graph = self.check_depends()
        self.cycle = dag.find_cycle(graph)
        if self.cycle:
            first = ("spec", "tasks", self.index[self.cycle[0]], "depends")
            self.add(first, "dependency cycle: " + " -> ".join(self.cycle) + " (-> = depends on)")
        self.check_time()
        self.check_matrices()
        self.matrix = {name: "matrix" in self.tasks[i] for name, i in self.index.items()}
        for i, task in enumerate(self.tasks):
            if self.index.get(task["name"]) == i:
                self.check_templates(i, task, graph)

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
        for i, task in enumerate(self.tasks):
            matrix = task.get("matrix")
            if matrix is None:
                total += 1
                continue
            where = ("spec", "tasks", i, "matrix")
            total += templating.matrix_size(matrix)
            if total > MAX_INSTANCES:
                self.add(where, f"the plan would have more than {MAX_INSTANCES:,} task instances")
                return
            for message in templating.check_matrix(task["name"], matrix):
                self.add(where, message)

    def check_templates(self, i: int, task: dict[str, Any], graph: dag.Graph) -> None:
        params = self.spec.get("params", {})
        keys = templating.matrix_keys(task.get("matrix"))
        upstream: set[str] | None = None  # computed only when needed: ancestors are costly
        for path, text in self.texts(i, task):
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
                if error:
                    self.add(path, f"{ref.text}: {error}")

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
        for base in (("spec", "env"), ("spec", "defaults", "env"), (*own, "env")):
            env = _get(self.doc.data, base) or {}
            for name, value in env.items():
                yield (*base, name), templating.to_text(value)


def _durations(spec: Mapping[str, Any]) -> Iterator[tuple[Path, Any]]:
    owners: list[tuple[Path, Mapping[str, Any]]] = [(("spec",), spec)]
    if "defaults" in spec:
        owners.append((("spec", "defaults"), spec["defaults"]))
    owners += [(("spec", "tasks", i), t) for i, t in enumerate(spec["tasks"])]
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


def _get(data: Any, path: Path) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# --------------------------------------------------------------------------- planning


def resolve_params(
    workflow: Workflow,
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
) -> dict[str, Any]:
    """Defaults from spec.params, then `params_file` (a YAML mapping), then `params`."""
    declared: dict[str, Any] = workflow.spec.get("params", {})
    values = dict(declared)
    problems: list[errors.Problem] = []
    if params_file is not None:
        doc = yamlsafe.load_file(params_file)
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "a params file is a mapping of param names to values"))
        for name, value in (doc.data if isinstance(doc.data, dict) else {}).items():
            if name not in declared:
                hint = schema.suggest(name, declared)
                problems.append(doc.problem((name,), f"unknown param {name!r}{hint}", at_key=True))
            elif isinstance(value, dict | list) or value is None:
                problems.append(doc.problem((name,), f"param {name!r}: expected a scalar value"))
            else:
                values[name] = value
    for name, value in (params or {}).items():
        if name in declared:
            values[name] = value
            continue
        hint = schema.suggest(name, declared)
        message = f"--param {name}: the workflow has no param {name!r}{hint}"
        problems.append(workflow.doc.problem(("spec", "params"), message, at_key=True))
    if problems:
        raise errors.WorkflowInvalid(problems)
    return values


def param_env(name: str) -> str:
    """The environment variable a param is given to tasks as: `RUNNER_PARAM_<NAME>`."""
    return "RUNNER_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class _Located(Exception):
    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class _Planner:
    """Builds every task instance of a checked workflow for one set of params."""

    def __init__(self, workflow: Workflow, params: dict[str, Any]) -> None:
        self.wf = workflow
        self.spec = workflow.spec
        self.defaults: dict[str, Any] = self.spec.get("defaults", {})
        self.params = params
        self.param_env = {param_env(k): templating.to_text(v) for k, v in params.items()}
        self.problems: list[errors.Problem] = []
        self.ids: dict[str, list[str]] = {}

    def build(self) -> list[models.TaskSpec]:
        combos: dict[str, list[dict[str, Any]]] = {
            t["name"]: templating.expand_matrix(t["matrix"]) if "matrix" in t else [{}]
            for t in self.wf.tasks
        }
        self.ids = {n: [templating.instance_id(n, c) for c in cs] for n, cs in combos.items()}
        specs: list[models.TaskSpec] = []
        for i, task in enumerate(self.wf.tasks):
            for combo in combos[task["name"]]:
                try:
                    specs.append(self.instance(i, task, combo))
                except _Located as exc:
                    self.problems.append(self.wf.doc.problem(exc.path, str(exc)))
        if self.problems:
            raise errors.WorkflowInvalid(self.problems)
        return specs

    def origin(self, i: int, task: dict[str, Any], key: str) -> tuple[Any, Path]:
        if key in task or key not in self.defaults:
            return task.get(key), ("spec", "tasks", i, key)
        return self.defaults[key], ("spec", "defaults", key)

    def text(self, value: Any, path: Path, combo: dict[str, Any], *, quote: bool = False) -> str:
        try:
            text = templating.to_text(value)
            return templating.render(text, params=self.params, matrix=combo, quote=quote)
        except templating.TemplateError as exc:
            raise _Located(path, str(exc)) from None

    def instance(self, i: int, task: dict[str, Any], combo: dict[str, Any]) -> models.TaskSpec:
        at: Path = ("spec", "tasks", i)
        kind = next(k for k in models.Kind if k.value in task)
        run = task.get("run")
        args = task.get("args")
        workdir, workdir_at = self.origin(i, task, "workdir")
        semaphore = self.origin(i, task, "semaphore")[0]
        try:
            with_ = templating.render_value(task.get("with", {}), params=self.params, matrix=combo)
        except templating.TemplateError as exc:
            raise _Located((*at, "with"), str(exc)) from None
        return models.TaskSpec(
            id=templating.instance_id(task["name"], combo),
            name=task["name"],
            kind=kind,
            run=None if run is None else self.text(run, (*at, "run"), combo, quote=True),
            args=None if args is None else self.args(args, (*at, "args"), combo),
            call=task.get("call"),
            with_=with_,
            shell=self.shell(i, task),
            env=self.env(i, task, combo),
            workdir=None if workdir is None else self.text(workdir, workdir_at, combo),
            priority=int(
                task.get("priority", self.defaults.get("priority", self.spec.get("priority", 0)))
            ),
            retries=_retries(self.origin(i, task, "retries")[0]),
            timeout=_seconds(self.origin(i, task, "timeout")[0]),
            depends=tuple(d for dep in task.get("depends", ()) for d in self.ids[dep]),
            when=models.When(self.origin(i, task, "when")[0] or "success"),
            allow_failure=bool(self.origin(i, task, "allowFailure")[0]),
            matrix=dict(combo),
            selector=dict(self.origin(i, task, "selector")[0] or {}),
            mutex=self.origin(i, task, "mutex")[0],
            semaphore=None if semaphore is None else models.Semaphore(**semaphore),
        )

    def args(self, args: list[Any], path: Path, combo: dict[str, Any]) -> tuple[str, ...]:
        return tuple(self.text(a, (*path, j), combo) for j, a in enumerate(args))

    def shell(self, i: int, task: dict[str, Any]) -> tuple[str, ...]:
        value, path = self.origin(i, task, "shell")
        if value is None:
            return ("/bin/sh", "-c")
        if isinstance(value, list):
            return tuple(value)
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise _Located(path, f"cannot split the shell command line: {exc}") from None

    def env(self, i: int, task: dict[str, Any], combo: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for base in (("spec", "env"), ("spec", "defaults", "env"), ("spec", "tasks", i, "env")):
            for name, value in (_get(self.wf.doc.data, base) or {}).items():
                env[name] = self.text(value, (*base, name), combo)
        env.update(self.param_env)
        return env


def _retries(value: Any) -> models.RetryPolicy:
    if value is None:
        return models.RetryPolicy()
    if isinstance(value, int):
        return models.RetryPolicy(limit=value)
    backoff = value.get("backoff", {})
    return models.RetryPolicy(
        limit=value["limit"],
        backoff=models.Backoff(
            delay=cronexpr.parse_duration(backoff.get("delay", 1.0)),
            factor=float(backoff.get("factor", 2.0)),
            max=_seconds(backoff.get("max")),
        ),
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else cronexpr.parse_duration(value)


def _schedule(spec: Mapping[str, Any]) -> models.Schedule | None:
    if "schedule" not in spec:
        return None
    return models.Schedule(
        cron=spec["schedule"],
        timezone=spec.get("timezone", "UTC"),
        concurrency_policy=models.ConcurrencyPolicy(spec.get("concurrencyPolicy", "Allow")),
        starting_deadline=_seconds(spec.get("startingDeadlineSeconds")),
        suspend=bool(spec.get("suspend", False)),
        catchup=spec.get("catchup", "latest"),
    )


def plan(
    workflow: Workflow,
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
) -> models.Plan:
    """Expand a checked workflow into a `models.Plan` for one set of params.

    Params come from `spec.params` defaults, overridden by `params_file` (a YAML mapping of
    names to values), then by `params` (`--param NAME=VALUE`); an unknown name is an
    `errors.WorkflowInvalid`. `Plan.tasks` is in stable topological order.
    """
    values = resolve_params(workflow, params=params, params_file=params_file)
    graph = dag.build(_Planner(workflow, values).build())
    metadata = workflow.doc.data["metadata"]
    result = models.Plan(
        workflow=workflow.name,
        source=workflow.source,
        description=metadata.get("description", ""),
        labels=dict(metadata.get("labels", {})),
        params=values,
        fail_fast=bool(workflow.spec.get("failFast", False)),
        parallelism=workflow.spec.get("parallelism"),
        timeout=_seconds(workflow.spec.get("timeout")),
        schedule=_schedule(workflow.spec),
        tasks=tuple(graph.nodes[n]["spec"] for n in dag.topo_order(graph)),
    )
    return dataclasses.replace(result, hash=plan_hash(result))


def load_plan(
    path: str | os.PathLike[str],
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
) -> models.Plan:
    """`plan(load(path), params=..., params_file=...)`."""
    return plan(load(path), params=params, params_file=params_file)


def plan_hash(p: models.Plan) -> str:
    """sha256 of the plan's canonical JSON: every field but `source` and `hash`."""
    body = {
        f.name: getattr(p, f.name)
        for f in dataclasses.fields(p)
        if f.name not in ("source", "hash", "tasks")
    }
    body["tasks"] = [t.to_dict() for t in p.tasks]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=dataclasses.asdict)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
