"""Dispatch strategies and cluster rules shared by both stores: which live worker gets each ready
task, which locks a task takes, and why a queued task waits. Pure: no store, no clock.

The leading scheduler reads a `DispatchView`, asks `plan_assignments` and writes the answer with
`Store.assign`. Strategies (docs/ARCHITECTURE.md, "Cluster"):

- `pull`: no assignment; idle workers claim from the shared queue.
- `round_robin`: the next worker in name order after the previous choice.
- `random`: uniformly among the workers that match the task (`DispatchState.rng`).
- `least_load`: the fewest (running + assigned) ÷ capacity; ties go to the worker chosen least.
- `weighted`: smooth weighted round robin (nginx): shares in proportion to `--weight`.

A worker can take a task when it is not draining, its labels match the task's selector and it
has a free slot: running + assigned < capacity. round_robin, weighted and random are strict (a
task waits for the worker whose turn it is, or that it drew), so their shares hold end to end.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from runner import transitions
from runner.models import DispatchView, ReadyTask, TaskKey, TaskSpec, WorkerInfo

PULL = "pull"
MAX_DRAWN = 100_000  # random: draws remembered for waiting tasks
STRATEGIES = ("round_robin", "random", "least_load", "weighted")  # the assigning ones
Assignment = tuple[TaskKey, str]  # (task key, worker id)
LockSpec = tuple[str, int]  # (lock name, limit)


@dataclass(slots=True)
class DispatchState:
    """What a dispatcher remembers between passes (it starts afresh on a new leader)."""

    rng: random.Random = field(default_factory=random.Random)
    last: str | None = None  # round_robin: the sort key of the last worker chosen
    current: dict[str, float] = field(default_factory=dict)  # weighted: smooth WRR credit
    chosen: Counter[str] = field(default_factory=Counter)  # tasks given to each worker
    drawn: dict[TaskKey, str] = field(default_factory=dict)  # random: a waiting task's draw


def effective(task: ReadyTask, default: str) -> str:
    """The strategy of a task: its run's `spec.dispatch`, else the scheduler's default."""
    return task.dispatch or default


def _order(w: WorkerInfo) -> str:
    return f"{w.name}\0{w.id}"


def round_robin(matching: Sequence[WorkerInfo], state: DispatchState) -> WorkerInfo:
    """The first matching worker after the last one chosen, in name order (wrapping)."""
    ranked = sorted(matching, key=_order)
    after = [w for w in ranked if state.last is None or _order(w) > state.last]
    return (after or ranked)[0]


def weighted(matching: Sequence[WorkerInfo], state: DispatchState) -> WorkerInfo:
    """Smooth weighted round robin: each matching worker earns its weight, the richest is
    chosen (and pays the total in `commit`). Shares follow the weights within one task."""
    credit = {w.id: state.current.get(w.id, 0.0) + max(1, w.weight) for w in matching}
    return max(sorted(matching, key=_order), key=lambda w: credit[w.id])


def least_load(
    free: Sequence[WorkerInfo], state: DispatchState, load: Mapping[str, int]
) -> WorkerInfo:
    """The fewest (running + assigned) ÷ capacity; ties: the worker chosen least, then name."""
    return min(free, key=lambda w: (load[w.id] / max(1, w.capacity), state.chosen[w.id], _order(w)))


def pick_random(matching: Sequence[WorkerInfo], state: DispatchState, key: TaskKey) -> WorkerInfo:
    """Uniformly at random among the matching workers (seed `state.rng` for reproducible
    tests). The draw is kept while the task waits for that worker's slot, so a slow worker is
    not drawn less often: shares stay uniform end to end."""
    ranked = sorted(matching, key=_order)
    drawn = state.drawn.get(key)
    chosen = next((w for w in ranked if w.id == drawn), None)
    if chosen is None:
        if len(state.drawn) > MAX_DRAWN:
            state.drawn.clear()
        chosen = state.rng.choice(ranked)
        state.drawn[key] = chosen.id
    return chosen


def commit(
    strategy: str,
    chosen: WorkerInfo,
    matching: Sequence[WorkerInfo],
    state: DispatchState,
    key: TaskKey,
) -> None:
    """Remember a choice that was made: the rotation moves on, credits are paid."""
    state.chosen[chosen.id] += 1
    if strategy == "random":
        state.drawn.pop(key, None)
    elif strategy == "round_robin":
        state.last = _order(chosen)
    elif strategy == "weighted":
        for w in matching:
            state.current[w.id] = state.current.get(w.id, 0.0) + max(1, w.weight)
        state.current[chosen.id] -= sum(max(1, w.weight) for w in matching)


def choose(
    strategy: str,
    matching: Sequence[WorkerInfo],
    state: DispatchState,
    load: Mapping[str, int],
    key: TaskKey = ("", ""),
) -> WorkerInfo | None:
    """The worker `strategy` picks for task `key` among the `matching` workers, or None when
    the task must wait. round_robin, weighted and random are strict: when the worker whose
    turn it is (or that was drawn) has no free slot, the task waits for it, so shares hold
    whatever the workers' speeds. least_load picks among the workers with a free slot."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown dispatch strategy {strategy!r}")
    if strategy == "least_load":
        free = [w for w in matching if load[w.id] < w.capacity]
        return least_load(free, state, load) if free else None
    if strategy == "random":
        chosen = pick_random(matching, state, key)
    else:
        chosen = (round_robin if strategy == "round_robin" else weighted)(matching, state)
    return chosen if load[chosen.id] < chosen.capacity else None


def plan_assignments(view: DispatchView, *, default: str, state: DispatchState) -> list[Assignment]:
    """Assignments for the view's ready tasks whose strategy is not `pull`, in queue order;
    a task no worker can take now is left queued for a later pass."""
    workers = [w for w in view.workers if not w.draining]
    load = {w.id: w.running + w.assigned for w in workers}
    out: list[Assignment] = []
    for task in view.tasks:
        strategy = effective(task, default)
        if strategy == PULL:
            continue
        matching = [w for w in workers if transitions.selector_matches(task.selector, w.labels)]
        chosen = choose(strategy, matching, state, load, task.key) if matching else None
        if chosen is None:
            continue
        commit(strategy, chosen, matching, state, task.key)
        load[chosen.id] += 1
        out.append((task.key, chosen.id))
    return out


# ---------------------------------------------------------------------- locks


def task_locks(spec: TaskSpec) -> list[LockSpec]:
    """The locks a task takes when it is claimed: `mutex:NAME` (limit 1) and
    `semaphore:NAME` (its limit). Empty for most tasks."""
    locks: list[LockSpec] = []
    if spec.mutex:
        locks.append((f"mutex:{spec.mutex}", 1))
    if spec.semaphore is not None:
        locks.append((f"semaphore:{spec.semaphore.name}", spec.semaphore.limit))
    return locks


def locks_free(locks: Iterable[LockSpec], held: Mapping[str, int]) -> bool:
    """Every lock has room: fewer holders than its limit."""
    return all(held.get(name, 0) < limit for name, limit in locks)


# ---------------------------------------------------------------------- waiting reasons


def no_worker_reason(selector: Mapping[str, str], workers: Iterable[WorkerInfo]) -> str | None:
    """ "waiting: no live worker matches gpu=true" when no live, non-draining worker's labels
    match the selector; None when one does (or the task has no selector)."""
    if not selector:
        return None
    if any(not w.draining and transitions.selector_matches(selector, w.labels) for w in workers):
        return None
    wanted = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return f"waiting: no live worker matches {wanted}"


def lock_reason(locks: Iterable[LockSpec], held: Mapping[str, int]) -> str | None:
    """ "waiting: mutex NAME is held" (or the semaphore at its limit) for a queued task whose
    lock has no room; None when every lock has room."""
    for name, limit in locks:
        if held.get(name, 0) >= limit:
            kind, _, bare = name.partition(":")
            if kind == "mutex":
                return f"waiting: mutex {bare} is held"
            return f"waiting: semaphore {bare} at its limit {limit}"
    return None
