"""`if:` conditions and forEach expansion on the SQLite store (inside the caller's transaction).

A task with a condition or a forEach has a `gate` (JSON: {"if": ..., "forEach": ...}); other
tasks have NULL there, so `flow.activate` pays nothing for them. When a gated task's
dependencies are all terminal and it would be queued, `sort` decides it: a false condition
makes it skipped (the reason kept in the gate, shown by `get run`); a forEach task writes one
task row per item (`name[i=N]`, queued at once) and stays pending, waiting for them as its
dependencies; when they are all terminal it ends succeeded, or failed when one failed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from runner import conditions, foreach, models
from runner.models import TaskSpec, TaskState
from runner.store.sqlite import cluster, rows

Ended = tuple[str, TaskState]  # a gated task made terminal: (task id, state)


def gate_json(spec: TaskSpec) -> str | None:
    """A task's gate column: NULL for an ordinary task."""
    gate: dict[str, object] = {}
    if spec.if_ is not None:
        gate["if"] = spec.if_
    if spec.for_each is not None:
        gate["forEach"] = True
    return json.dumps(gate) if gate else None


def write_aging(db: sqlite3.Connection, run_id: str, plan: models.Plan) -> None:
    """A new run's aging (create_run's transaction; its tasks' gates go in with their rows)."""
    if plan.aging is not None:
        db.execute(
            "UPDATE runs SET aging_every = ?, aging_by = ? WHERE id = ?",
            (plan.aging.every, plan.aging.by, run_id),
        )


def sort(
    db: sqlite3.Connection, run_id: str, ready: list[str], known: dict[str, str] | None
) -> tuple[list[str], list[Ended]]:
    """Of tasks about to be queued, those to queue (with new forEach instances) and the gated
    ones that end instead. `known`: their gates, when the caller read them (else read here)."""
    gates = known if known is not None else _read(db, run_id, ready)
    if not gates:
        return ready, []
    queue: list[str] = []
    ended: list[Ended] = []
    for task_id in ready:
        gate = rows.parse(gates[task_id]) if task_id in gates else None
        if gate is None:
            queue.append(task_id)
        elif gate.get("expanded") is not None:
            ended.append((task_id, _joined(db, run_id, task_id)))
        else:
            _open(db, run_id, task_id, gate, queue, ended)
    return queue, ended


def _read(db: sqlite3.Connection, run_id: str, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    found = db.execute(
        "SELECT task_id, gate FROM tasks WHERE run_id = ? AND gate IS NOT NULL"
        " AND task_id IN (SELECT value FROM json_each(?))",
        (run_id, json.dumps(ids)),
    ).fetchall()
    return dict(found)


def _open(
    db: sqlite3.Connection,
    run_id: str,
    task_id: str,
    gate: dict[str, object],
    queue: list[str],
    ended: list[Ended],
) -> None:
    """A gated task whose dependencies are done: its condition, then its expansion."""
    if "why" in gate:  # decided before, and retried (`runner retry`): forget the old reason
        gate = {k: v for k, v in gate.items() if k != "why"}
        _note(db, run_id, task_id, gate)
    spec = _spec(db, run_id, task_id)
    if spec.if_ is not None:
        ok, why = _condition(db, run_id, spec)
        if not ok:
            _note(db, run_id, task_id, {**gate, "why": why})
            ended.append((task_id, TaskState.SKIPPED))
            return
    if spec.for_each is None:
        queue.append(task_id)
        return
    try:
        items = foreach.items_of(
            spec.for_each, _outputs(db, run_id, [spec.for_each.task]).get(spec.for_each.task)
        )
    except foreach.ForEachError as exc:
        _note(db, run_id, task_id, {**gate, "why": str(exc)})
        ended.append((task_id, TaskState.FAILED))
        return
    instances = foreach.instances(spec, items)
    _insert(db, run_id, spec, instances)
    _note(db, run_id, task_id, {**gate, "expanded": len(instances)})
    if instances:
        queue.extend(t["id"] for t in instances)
    else:
        ended.append((task_id, TaskState.SUCCEEDED))


def _spec(db: sqlite3.Connection, run_id: str, task_id: str) -> TaskSpec:
    (text,) = db.execute(
        "SELECT spec FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)
    ).fetchone()
    return TaskSpec.from_dict(rows.parse(text))


def _condition(db: sqlite3.Connection, run_id: str, spec: TaskSpec) -> tuple[bool, str]:
    assert spec.if_ is not None
    (params,) = db.execute("SELECT params FROM runs WHERE id = ?", (run_id,)).fetchone()
    outputs = _outputs(db, run_id, conditions.output_names(spec.if_))
    return conditions.holds(
        spec.if_,
        run_id=run_id,
        params=rows.parse(params),
        matrix=spec.matrix,
        outputs=outputs,
        item=spec.item,
    )


def _outputs(
    db: sqlite3.Connection, run_id: str, names: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Outputs of tasks by name (a task that is not a matrix task has its name as id)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    found = db.execute(
        "SELECT task_id, outputs FROM tasks WHERE run_id = ?"
        " AND task_id IN (SELECT value FROM json_each(?))",
        (run_id, json.dumps(wanted)),
    ).fetchall()
    return {tid: rows.loads(out) for tid, out in found}


def _note(db: sqlite3.Connection, run_id: str, task_id: str, gate: dict[str, object]) -> None:
    db.execute(
        "UPDATE tasks SET gate = ? WHERE run_id = ? AND task_id = ?",
        (json.dumps(gate), run_id, task_id),
    )


def _insert(
    db: sqlite3.Connection, run_id: str, spec: TaskSpec, instances: list[dict[str, Any]]
) -> None:
    """Rows for the instances (pending, queued by the caller; their `depends` the expanded
    task's, for the run's DAG), each an edge into the expanded task, which now waits for them
    all: its `depends` become their ids and its `when` always (its state is `_joined`'s)."""
    task_id = spec.id
    (seq,) = db.execute("SELECT max(seq) FROM tasks WHERE run_id = ?", (run_id,)).fetchone()
    selector = json.dumps(spec.selector) if spec.selector else None
    locks = cluster.locks_json(spec)  # the same for every instance
    depends = json.dumps(list(dict.fromkeys(spec.depends)))
    db.executemany(
        "INSERT INTO tasks (run_id, task_id, seq, name, spec, depends, when_, allow_failure,"
        " selector, state, priority, remaining_deps, locks)"
        " VALUES (?,?,?,?,?,?,'always',?,?,'pending',?,0,?)",
        [
            (
                run_id,
                t["id"],
                seq + 1 + n,
                spec.name,
                json.dumps(t),
                depends,
                int(spec.allow_failure),
                selector,
                spec.priority,
                locks,
            )
            for n, t in enumerate(instances)
        ],
    )
    db.executemany(
        "INSERT INTO deps (run_id, dep_id, task_id) VALUES (?, ?, ?)",
        [(run_id, t["id"], task_id) for t in instances],
    )
    db.execute(
        "UPDATE tasks SET remaining_deps = ?, depends = ?, when_ = 'always'"
        " WHERE run_id = ? AND task_id = ?",
        (len(instances), json.dumps([t["id"] for t in instances]), run_id, task_id),
    )
    db.execute(
        "UPDATE runs SET tasks_total = tasks_total + ? WHERE id = ?", (len(instances), run_id)
    )


def _joined(db: sqlite3.Connection, run_id: str, task_id: str) -> TaskState:
    """An expanded task whose instances are all terminal: its own state."""
    found = db.execute(
        "SELECT t.state, t.allow_failure FROM deps d JOIN tasks t"
        " ON t.run_id = d.run_id AND t.task_id = d.dep_id WHERE d.run_id = ? AND d.task_id = ?"
        " AND t.name = (SELECT name FROM tasks WHERE run_id = ? AND task_id = ?)",
        (run_id, task_id, run_id, task_id),
    ).fetchall()
    return foreach.state_of([(TaskState(s), bool(a)) for s, a in found])
