"""Expand a checked workflow document into a `models.Plan`: params, matrix instances, templates.

`runner.workflow` checks a file and calls `build_plan`; nothing here re-checks what the checks
guarantee (a schema-valid document, known dependencies, no cycle). Problems that only planning can
find (a `--param` name the file does not declare, a template a param value cannot fill) are raised
as `errors.WorkflowInvalid`, located at the YAML node at fault like every other problem.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import pathlib
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

from runner import (
    cache,
    conditions,
    cronexpr,
    dag,
    errors,
    foreach,
    models,
    schema,
    templating,
    yamlsafe,
)

Path = yamlsafe.Path
RESERVED_MATRIX_KEYS = ("include", "exclude")
MAX_INSTANCES = 100_000  # task instances of a plan held in memory, after matrix expansion
MAX_STREAMED = 1_000_000  # ... of a plan streamed (`streamable`): made again on each pass
STREAM_ABOVE = 10_000  # a streamable plan of more instances than this is streamed
_ENV_NAME = re.compile(r"[^A-Za-z0-9]")


def matrix_keys(matrix: Mapping[str, Any] | None) -> set[str]:
    """Every key a matrix instance may have: the axes and the keys `include` adds."""
    if not matrix:
        return set()
    keys = {k for k in matrix if k not in RESERVED_MATRIX_KEYS}
    for entry in matrix.get("include") or ():
        keys.update(entry)
    return keys


def matrix_size(matrix: Mapping[str, Any]) -> int:
    """How many combinations the axes alone make (before include/exclude)."""
    axes = [v for k, v in matrix.items() if k not in RESERVED_MATRIX_KEYS]
    return math.prod(len(v) for v in axes) + len(matrix.get("include") or ())


def expand_matrix(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The combinations of a `matrix`, with `exclude` and `include` as in GitHub Actions.

    An `exclude` entry drops every combination that matches all of its keys. An `include`
    entry extends every combination whose original axis values it does not contradict (values
    added by an earlier include may be overwritten); when it fits none, it is a new combination.
    """
    axes = {k: v for k, v in matrix.items() if k not in RESERVED_MATRIX_KEYS}
    combos = [dict(zip(axes, vs, strict=True)) for vs in itertools.product(*axes.values())]
    if not axes:
        combos = []
    for entry in matrix.get("exclude") or ():
        combos = [c for c in combos if not _matches(c, entry)]
    originals = [dict(c) for c in combos]
    for entry in matrix.get("include") or ():
        fits = [i for i, o in enumerate(originals) if _matches(o, entry, only_common=True)]
        for i in fits:
            combos[i].update(entry)
        if not fits:
            combos.append(dict(entry))
            originals.append(dict(entry))
    return combos


def iter_matrix(matrix: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """`expand_matrix`'s combinations one at a time, in the same order; without `include`
    (which may extend any earlier combination) none is held."""
    if matrix.get("include"):
        yield from expand_matrix(matrix)
        return
    axes = {k: v for k, v in matrix.items() if k not in RESERVED_MATRIX_KEYS}
    if not axes:
        return
    excludes = matrix.get("exclude") or ()
    for values in itertools.product(*axes.values()):
        combo = dict(zip(axes, values, strict=True))
        if not any(_matches(combo, entry) for entry in excludes):
            yield combo


def _instances(matrix: Mapping[str, Any] | None) -> int:
    if matrix is None:
        return 1
    if not matrix.get("exclude") and not matrix.get("include"):
        return matrix_size(matrix)
    return sum(1 for _ in iter_matrix(matrix))


def streamable(spec: Mapping[str, Any]) -> bool:
    """Whether a plan of this `spec` can be streamed: each instance is made from its task and
    matrix values alone. A `cache:` fingerprint takes its dependencies' and a `workflow:` task
    plans a sub-run, and a scheduled plan is stored whole with its schedule, so those plans are
    held whole (at most MAX_INSTANCES)."""
    if "schedule" in spec:
        return False
    return not any("cache" in t or "workflow" in t for t in spec["tasks"])


def instance_limit(spec: Mapping[str, Any]) -> int:
    """The most task instances a plan of this `spec` may have (docs/WORKFLOW.md, "Matrix")."""
    return MAX_STREAMED if streamable(spec) else MAX_INSTANCES


def _matches(
    combo: Mapping[str, Any], entry: Mapping[str, Any], *, only_common: bool = False
) -> bool:
    return all(
        templating.to_text(combo[k]) == templating.to_text(v) if k in combo else only_common
        for k, v in entry.items()
    )


def check_matrix(name: str, matrix: Mapping[str, Any]) -> list[str]:
    """What is wrong with a task's matrix: no instances, or two instances with one id."""
    if matrix_size(matrix) > STREAM_ABOVE and not matrix.get("include"):
        return _check_large_matrix(name, matrix)
    combos = expand_matrix(matrix)
    if not combos:
        return [f"the matrix of task {name!r} expands to no instances"]
    ids = [instance_id(name, c) for c in combos]
    dups = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    return [f"the matrix expands to {i!r} more than once" for i in dups]


def _check_large_matrix(name: str, matrix: Mapping[str, Any]) -> list[str]:
    """`check_matrix` without holding the combinations (no `include`): two combinations of the
    axes share an id exactly when an axis has two values with the same text."""
    problems = []
    for axis, values in matrix.items():
        if axis in RESERVED_MATRIX_KEYS:
            continue
        counts = collections.Counter(templating.to_text(v) for v in values)
        for text in sorted(t for t, n in counts.items() if n > 1):
            problems.append(
                f"axis {axis!r} has the value {text!r} more than once: every instance with it"
                " would have the same id"
            )
    if not problems and next(iter_matrix(matrix), None) is None:
        problems.append(f"the matrix of task {name!r} expands to no instances")
    return problems


def instance_id(name: str, combo: Mapping[str, Any]) -> str:
    """`name[key=value,...]` with keys sorted; `name` when there is no matrix."""
    if not combo:
        return name
    return f"{name}[{','.join(f'{k}={templating.to_text(combo[k])}' for k in sorted(combo))}]"


def get_in(data: Any, path: Path) -> Any:
    """The value at `path` inside `data`, or None when any step is missing."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def resolve_params(
    doc: yamlsafe.Document,
    *,
    params: Mapping[str, str] | None = None,
    params_file: str | None = None,
) -> dict[str, Any]:
    """Defaults from spec.params, then `params_file` (a YAML mapping), then `params`."""
    declared: dict[str, Any] = doc.data["spec"].get("params", {})
    values = dict(declared)
    problems: list[errors.Problem] = []
    if params_file is not None:
        problems += _read_params_file(params_file, declared, values)
    for name, value in (params or {}).items():
        if "\0" in name or "\0" in value:
            message = f"--param {errors.clip(name)}=...: a NUL byte cannot reach a task; remove it"
            problems.append(doc.problem(("spec", "params"), message, at_key=True))
            continue
        if name in declared:
            values[name] = value
            continue
        hint = schema.suggest(name, declared)
        message = (
            f"--param {errors.clip(name)}: the workflow has no param {errors.clip(name)!r}{hint}"
        )
        problems.append(doc.problem(("spec", "params"), message, at_key=True))
    if problems:
        raise errors.WorkflowInvalid(problems)
    return values


def _read_params_file(
    path: str, declared: Mapping[str, Any], values: dict[str, Any]
) -> list[errors.Problem]:
    doc = yamlsafe.load_file(path)
    problems = nul_problems(doc)
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
    return problems


def nul_problems(doc: yamlsafe.Document) -> list[errors.Problem]:
    """A problem for every key or string of `doc` holding a NUL byte: no process argument,
    environment variable or file name can carry one, so it is refused where it enters."""
    message = "a NUL byte (\\0) cannot be passed to a task; remove it"
    return [doc.problem(path, message, at_key=at_key) for path, at_key in _nul_paths(doc.data, ())]


def _nul_paths(value: Any, path: Path) -> list[tuple[Path, bool]]:
    found: list[tuple[Path, bool]] = []
    if isinstance(value, str):
        if "\0" in value:
            found.append((path, False))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\0" in key:
                found.append(((*path, key), True))
            found += _nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for j, item in enumerate(value):
            found += _nul_paths(item, (*path, j))
    return found


def param_env(name: str) -> str:
    """The environment variable a param is given to tasks as: `RUNNER_PARAM_<NAME>`."""
    return "RUNNER_PARAM_" + _ENV_NAME.sub("_", name).upper()


_KINDS = tuple((kind.value, kind) for kind in models.Kind)  # the key that gives a task its kind
_WHEN = {when.value: when for when in models.When}


class _Located(Exception):
    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class _Ids(dict[str, list[str]]):
    """A streamed plan's instance ids by task, made the first time a dependent asks."""

    def __init__(self, planner: _Planner) -> None:
        super().__init__()
        self.planner = planner

    def __missing__(self, name: str) -> list[str]:
        task = next(t for t in self.planner.tasks if t["name"] == name)
        ids = self[name] = [instance_id(name, c) for c in self.planner.combos(task)]
        return ids


class _Planner:
    """Builds every task instance of a checked document for one set of params."""

    def __init__(self, doc: yamlsafe.Document, params: dict[str, Any]) -> None:
        self.doc = doc
        self.spec: dict[str, Any] = doc.data["spec"]
        self.tasks: list[dict[str, Any]] = self.spec["tasks"]
        self.defaults: dict[str, Any] = self.spec.get("defaults", {})
        self.params = params
        # Escaped like every substituted value: a param's text is never read as a template.
        self.param_env = {
            param_env(k): templating.escape(templating.to_text(v)) for k, v in params.items()
        }
        self.anchor: str | None = None  # see build_plan
        self.problems: list[errors.Problem] = []
        self.ids: Mapping[str, list[str]] = {}  # a task's instance ids, for its dependents
        self.shared_env: list[tuple[Path, Any]] = [  # spec.env, then spec.defaults.env
            ((*base, name), value)
            for base in (("spec", "env"), ("spec", "defaults", "env"))
            for name, value in (get_in(doc.data, base) or {}).items()
        ]

    def build(self) -> list[models.TaskSpec]:
        """Every instance, in file order."""
        combos: dict[str, list[dict[str, Any]]] = {
            t["name"]: expand_matrix(t["matrix"]) if "matrix" in t else [{}] for t in self.tasks
        }
        self.ids = {n: [instance_id(n, c) for c in cs] for n, cs in combos.items()}
        specs: list[models.TaskSpec] = []
        for i, task in enumerate(self.tasks):
            base = self.common(i, task)
            for combo, id_ in zip(combos[task["name"]], self.ids[task["name"]], strict=True):
                spec = self.located(i, task, combo, {**base, "id": id_})
                if spec is not None:
                    specs.append(spec)
        if self.problems:
            raise errors.WorkflowInvalid(self.problems)
        return specs

    def located(
        self, i: int, task: dict[str, Any], combo: dict[str, Any], fields: dict[str, Any]
    ) -> models.TaskSpec | None:
        """One instance, or None with its problem noted."""
        fields["selector"] = dict(fields["selector"])  # each instance owns its mapping
        try:
            return self.instance(i, task, combo, fields)
        except _Located as exc:
            self.problems.append(self.doc.problem(exc.path, str(exc)))
            return None

    def combos(self, task: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return iter_matrix(task["matrix"]) if "matrix" in task else iter(({},))

    def count(self) -> int:
        """How many instances `stream` makes (nothing held; a pass over a matrix only when
        its `exclude` or `include` makes the product's size wrong)."""
        return sum(_instances(t.get("matrix")) for t in self.tasks)

    def stream(self) -> Iterator[models.TaskSpec]:
        """Every instance in the order `build_plan` gives a held plan: tasks in topological
        order (file order breaks ties), each task's instances together in matrix order. The
        same order, because a task depends on every instance of its dependencies: once the
        first instance of a task is free, nothing else is freed before its last.
        Raises WorkflowInvalid after the pass, when an instance had a problem."""
        depends = {t["name"]: t.get("depends", ()) for t in self.tasks}
        index = {t["name"]: i for i, t in enumerate(self.tasks)}
        self.ids = _Ids(self)
        self.problems = []
        for name in dag.topo_order(dag.from_depends(depends)):
            i = index[name]
            task = self.tasks[i]
            base = self.common(i, task)
            for combo in self.combos(task):
                fields = {**base, "id": instance_id(name, combo)}
                spec = self.located(i, task, combo, fields)
                if spec is not None:
                    yield spec
        if self.problems:
            raise errors.WorkflowInvalid(self.problems)

    def origin(self, i: int, task: dict[str, Any], key: str) -> tuple[Any, Path]:
        if key in task or key not in self.defaults:
            return task.get(key), ("spec", "tasks", i, key)
        return self.defaults[key], ("spec", "defaults", key)

    def common(self, i: int, task: dict[str, Any]) -> dict[str, Any]:
        """The fields that are the same for every matrix instance of a task."""
        field = {**self.defaults, **task}  # a task's own fields win over the defaults
        try:
            shell: tuple[str, ...] | _Located = self.shell(i, task)
        except _Located as exc:  # raised by `instance`, after the problems found before it
            shell = exc
        semaphore = field.get("semaphore")
        return {
            "name": task["name"],
            "kind": next(kind for key, kind in _KINDS if key in task),
            "call": task.get("call"),
            "shell": shell,
            "priority": int(field.get("priority", self.spec.get("priority", 0))),
            "retries": _retries(field.get("retries")),
            "timeout": _seconds(field.get("timeout")),
            "depends": tuple(d for dep in task.get("depends", ()) for d in self.ids[dep]),
            "when": _WHEN[field.get("when") or "success"],
            "allow_failure": bool(field.get("allowFailure")),
            "selector": field.get("selector") or {},
            "mutex": field.get("mutex"),
            "semaphore": None if semaphore is None else models.Semaphore(**semaphore),
            "if_": task.get("if"),
            "for_each": for_each(task.get("forEach"), self.spec),
        }

    def text(self, value: Any, path: Path, combo: dict[str, Any], *, quote: bool = False) -> str:
        try:
            text = templating.to_text(value)
            return templating.render(text, params=self.params, matrix=combo, quote=quote)
        except templating.TemplateError as exc:
            raise _Located(path, str(exc)) from None

    def instance(
        self, i: int, task: dict[str, Any], combo: dict[str, Any], base: dict[str, Any]
    ) -> models.TaskSpec:
        at: Path = ("spec", "tasks", i)
        run = task.get("run")
        args = task.get("args")
        workdir, workdir_at = self.origin(i, task, "workdir")
        try:
            with_ = templating.render_value(task.get("with", {}), params=self.params, matrix=combo)
        except templating.TemplateError as exc:
            raise _Located((*at, "with"), str(exc)) from None
        run_ = None if run is None else self.text(run, (*at, "run"), combo, quote=True)
        args_ = None if args is None else self.args(args, (*at, "args"), combo)
        if isinstance(base["shell"], _Located):
            raise _Located(base["shell"].path, str(base["shell"]))
        return models.TaskSpec(
            run=run_,
            args=args_,
            with_=with_,
            env=self.env(i, task, combo),
            secret_env=self.secret_env(task),
            workdir=anchored_workdir(
                self.anchor, None if workdir is None else self.text(workdir, workdir_at, combo)
            ),
            matrix=dict(combo),
            cache=self.cache(i, task, combo),
            **base,
        )

    def cache(
        self, i: int, task: dict[str, Any], combo: dict[str, Any]
    ) -> models.CachePolicy | None:
        if "cache" not in task:
            return None
        try:
            return cache.policy(task["cache"], params=self.params, matrix=combo)
        except templating.TemplateError as exc:
            raise _Located(("spec", "tasks", i, "cache", "key"), str(exc)) from None

    def args(self, args: list[Any], path: Path, combo: dict[str, Any]) -> tuple[str, ...]:
        return tuple(self.text(a, (*path, j), combo) for j, a in enumerate(args))

    def shell(self, i: int, task: dict[str, Any]) -> tuple[str, ...]:
        value, path = self.origin(i, task, "shell")
        return _shell(value, path)

    def env(self, i: int, task: dict[str, Any], combo: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for path, value in self.shared_env:
            if not isinstance(value, dict):
                env[str(path[-1])] = self.text(value, path, combo)
        for name, value in task.get("env", {}).items():
            if isinstance(value, dict):  # a secret reference: `secret_env`, a task's own wins
                env.pop(name, None)
            else:
                env[name] = self.text(value, ("spec", "tasks", i, "env", name), combo)
        env.update(self.param_env)
        return env

    def secret_env(self, task: dict[str, Any]) -> dict[str, models.SecretRef]:
        """The env values given as `{fromEnv: NAME}` or `{fromFile: PATH}`: only the references
        go into the plan; the worker reads the values (docs/SECURITY.md)."""
        refs: dict[str, models.SecretRef] = {}
        for path, value in self.shared_env:
            if isinstance(value, dict):
                refs[str(path[-1])] = models.SecretRef.from_dict(value)
            else:
                refs.pop(str(path[-1]), None)
        for name, value in task.get("env", {}).items():
            if isinstance(value, dict):
                refs[name] = models.SecretRef.from_dict(value)
            else:
                refs.pop(name, None)
        return refs


@functools.lru_cache(maxsize=1024)  # a file repeats the same few durations and retry policies
def _duration(value: str | float) -> float:
    return cronexpr.parse_duration(value)


def _retries(value: Any) -> models.RetryPolicy:
    if not isinstance(value, dict):  # a count; the schema also accepts 2.0 as an integer
        return _retry_policy(int(value or 0))
    backoff = value.get("backoff", {})
    return _retry_policy(
        value["limit"], backoff.get("delay", 1.0), backoff.get("factor", 2.0), backoff.get("max")
    )


@functools.lru_cache(maxsize=1024, typed=True)  # immutable: tasks with one policy share it
def _retry_policy(
    limit: int, delay: Any = None, factor: float = 2.0, max_: Any = None
) -> models.RetryPolicy:
    if delay is None:
        return models.RetryPolicy(limit=limit)
    backoff = models.Backoff(delay=_duration(delay), factor=float(factor), max=_seconds(max_))
    return models.RetryPolicy(limit=limit, backoff=backoff)


def _seconds(value: Any) -> float | None:
    return None if value is None else _duration(value)


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


def for_each(text: str | None, spec: Mapping[str, Any]) -> models.ForEach | None:
    """A task's `forEach` (checked: one `${{ tasks.NAME.outputs.KEY }}` reference)."""
    if text is None:
        return None
    ref = templating.parse(conditions.source(text)[0])
    limit = int(get_in(spec, ("limits", "forEach")) or foreach.DEFAULT_LIMIT)
    return models.ForEach(task=ref.name, output=ref.key, limit=limit)


def _aging(value: Mapping[str, Any] | None) -> models.Aging | None:
    if not value:
        return None
    return models.Aging(every=_duration(value["every"]), by=int(value.get("by", 1)))


def build_plan(
    doc: yamlsafe.Document, *, source: str, params: dict[str, Any], anchor: str | None = None
) -> models.Plan:
    """The plan of a checked document for resolved `params` (see `resolve_params`), with every
    task's working directory made absolute against the folder `anchor` when given (a task
    without `workdir:` runs there, a relative one is taken from it, an absolute one stays)."""
    metadata = doc.data["metadata"]
    spec = doc.data["spec"]
    tasks: collections.abc.Sequence[models.TaskSpec]
    planner = _Planner(doc, params)
    if streamable(spec) and (n := planner.count()) > STREAM_ABOVE:
        planner.anchor = anchor  # made anchored: a `dataclasses.replace` per pass costs
        tasks = models.StreamedTasks(planner.stream, n)  # its hash is the first pass
    else:
        specs = {spec.id: spec for spec in planner.build()}
        graph = dag.build(specs.values())
        ordered = [specs[n] for n in dag.topo_order(graph)]
        # anchored after the cache fingerprints, which hold the workdir as written
        tasks = _with_cache_inputs(doc, ordered, source=source)
        if anchor is not None:
            tasks = tuple(
                dataclasses.replace(t, workdir=anchored_workdir(anchor, t.workdir)) for t in tasks
            )
    result = models.Plan(
        workflow=str(metadata["name"]),
        source=source,
        description=metadata.get("description", ""),
        labels=dict(metadata.get("labels", {})),
        params=params,
        fail_fast=bool(spec.get("failFast", False)),
        parallelism=spec.get("parallelism"),
        dispatch=spec.get("dispatch"),
        aging=_aging(spec.get("aging")),
        timeout=_seconds(spec.get("timeout")),
        schedule=_schedule(spec),
        tasks=tasks,
        hooks=_hooks(doc, params),
        concurrency=_concurrency(doc, params),
    )
    return dataclasses.replace(result, hash=plan_hash(result))


@functools.lru_cache(maxsize=1024)  # a task's instances mostly share one workdir
def anchored_workdir(anchor: str | None, workdir: str | None) -> str | None:
    """`workdir` made absolute against the folder `anchor` (unchanged without one)."""
    if anchor is None:
        return workdir
    return os.path.normpath(os.path.join(os.path.abspath(anchor), workdir or "."))


def _hooks(doc: yamlsafe.Document, params: dict[str, Any]) -> tuple[models.HookSpec, ...]:
    """`spec.hooks` with plan-time templates (`${{ params.* }}`) filled (docs/HOOKS.md)."""
    planner = _Planner(doc, params)
    hooks: list[models.HookSpec] = []
    for i, hook in enumerate(doc.data["spec"].get("hooks") or ()):
        at: Path = ("spec", "hooks", i)
        try:
            hooks.append(_hook(planner, hook, at))
        except _Located as exc:
            planner.problems.append(doc.problem(exc.path, str(exc)))
    if planner.problems:
        raise errors.WorkflowInvalid(planner.problems)
    return tuple(hooks)


def _hook(planner: _Planner, hook: dict[str, Any], at: Path) -> models.HookSpec:
    run, args, webhook = hook.get("run"), hook.get("args"), hook.get("webhook") or {}
    shell = hook.get("shell")
    env = {n: planner.text(v, (*at, "env", n), {}) for n, v in (hook.get("env") or {}).items()}
    return models.HookSpec(
        on=tuple(hook["on"]),
        run=None if run is None else planner.text(run, (*at, "run"), {}, quote=True),
        args=None if args is None else planner.args(args, (*at, "args"), {}),
        shell=_shell(shell, (*at, "shell")),
        env={**env, **planner.param_env},
        workdir=hook.get("workdir"),
        timeout=_seconds(hook.get("timeout")),
        url=None if not webhook else planner.text(webhook["url"], (*at, "webhook", "url"), {}),
        headers=dict(webhook.get("headers") or {}),
        when=hook.get("when"),
        retries=int(hook.get("retries", 5)),
    )


def _shell(value: Any, path: Path) -> tuple[str, ...]:
    """A `shell:` value (a command line or a list) as argv; the default is `/bin/sh -c`."""
    if value is None:
        return ("/bin/sh", "-c")
    if isinstance(value, list):
        return tuple(value)
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise _Located(path, f"cannot split the shell command line: {exc}") from None


def _concurrency(doc: yamlsafe.Document, params: dict[str, Any]) -> models.Concurrency | None:
    """`spec.concurrency` with its group rendered for these params (plan time only)."""
    found = doc.data["spec"].get("concurrency")
    if found is None:
        return None
    path: Path = ("spec", "concurrency", "group")
    try:
        group = templating.render(str(found["group"]), params=params, matrix={}, quote=False)
    except templating.TemplateError as exc:
        raise errors.WorkflowInvalid([doc.problem(path, str(exc))]) from None
    if "${{" in group:
        message = "only params can be used here: the group is known when the run is created"
        raise errors.WorkflowInvalid([doc.problem(path, message)])
    return models.Concurrency(
        group=group, cancel_in_progress=bool(found.get("cancelInProgress", False))
    )


def _with_cache_inputs(
    doc: yamlsafe.Document, specs: list[models.TaskSpec], *, source: str
) -> tuple[models.TaskSpec, ...]:
    """Fill cached tasks' fingerprints, hashing `cache.files` relative to the file's folder."""
    if not any(s.cache is not None for s in specs):
        return tuple(specs)
    try:
        return tuple(cache.inputs(specs, base=pathlib.Path(source).parent))
    except cache.CacheFileError as exc:
        tasks = doc.data["spec"]["tasks"]
        at = next(i for i, t in enumerate(tasks) if t["name"] == exc.task)
        path = ("spec", "tasks", at, "cache", "files")
        raise errors.WorkflowInvalid([doc.problem(path, str(exc))]) from None


def plan_hash(p: models.Plan) -> str:
    """sha256 of the plan's canonical JSON: every field but `source` and `hash`."""
    body = {
        f.name: getattr(p, f.name)
        for f in dataclasses.fields(p)
        if f.name not in ("source", "hash", "tasks", "hooks")
        and not (f.name == "concurrency" and p.concurrency is None)  # older plans' hashes stay
    }
    if body["aging"] is None:  # plans without aging keep the hash they had before it
        del body["aging"]
    if p.hooks:  # a plan without hooks keeps the hash it had before hooks existed
        body["hooks"] = [h.to_dict() for h in p.hooks]
    # The tasks are hashed one at a time, as they would appear in the whole text: a streamed
    # plan is never held (json.dumps of a list is "[" + its items joined by "," + "]").
    body["tasks"] = _TASKS_MARK
    # YAML aliases can share values but never form a cycle: skip json's cycle bookkeeping
    encoder = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), default=dataclasses.asdict, check_circular=False
    )
    head, tail = encoder.encode(body).split(encoder.encode(_TASKS_MARK), 1)
    digest = hashlib.sha256(head.encode("utf-8"))
    digest.update(b"[")
    for i, task in enumerate(p.tasks):
        if i:
            digest.update(b",")
        digest.update(encoder.encode(task.to_dict()).encode("utf-8"))
    digest.update(b"]")
    digest.update(tail.encode("utf-8"))
    return digest.hexdigest()


_TASKS_MARK = "\x00tasks\x00"  # where the tasks go in the text: no plan value holds a NUL
