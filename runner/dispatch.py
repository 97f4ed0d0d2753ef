"""Dispatch strategies and cluster rules shared by both stores: which live worker gets each ready
task, which locks a task takes, and why a queued task waits. Pure: no store, no clock.

The leading scheduler reads a `DispatchView`, asks `plan_assignments` and writes the answer with
`Store.assign`. Strategies (docs/ARCHITECTURE.md, "Cluster"):

- `pull`: no assignment; idle workers claim from the shared queue.
- `round_robin`: the next worker in name order after the previous choice.
- `random`: uniformly among the workers that can take the task (`DispatchState.rng`).
- `least_load`: the fewest (running + assigned) ÷ capacity; ties go to the worker chosen least.
- `weighted`: smooth weighted round robin (nginx): shares in proportion to `--weight`.

A worker can take a task when it is not draining, its labels match the task's selector and it
has a free slot: running + assigned < capacity.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from runner import transitions
from runner.models import DispatchView, ReadyTask, TaskKey, TaskSpec, WorkerInfo

PULL = "pull"
Assignment = tuple[TaskKey, str]  # (task key, worker id)
LockSpec = tuple[str, int]  # (lock name, limit)


@dataclass(slots=True)
class DispatchState:
    """What a dispatcher remembers between passes (it starts afresh on a new leader)."""

    rng: random.Random = field(default_factory=random.Random)
    last: str | None = None  # round_robin: the sort key of the last worker chosen
    current: dict[str, float] = field(default_factory=dict)  # weighted: smooth WRR credit
    chosen: Counter[str] = field(default_factory=Counter)  # tasks given to each worker


def effective(task: ReadyTask, default: str) -> str:
    """The strategy of a task: its run's `spec.dispatch`, else the scheduler's default."""
    return task.dispatch or default


def _order(w: WorkerInfo) -> str:
    return f"{w.name}\0{w.id}"


def round_robin(eligible: Sequence[WorkerInfo], state: DispatchState) -> WorkerInfo:
    """The first eligible worker after the last one chosen, in name order (wrapping)."""
    ranked = sorted(eligible, key=_order)
    after = [w for w in ranked if state.last is None or _order(w) > state.last]
    chosen = (after or ranked)[0]
    state.last = _order(chosen)
    return chosen


def weighted(eligible: Sequence[WorkerInfo], state: DispatchState) -> WorkerInfo:
    """Smooth weighted round robin: each eligible worker earns its weight, the richest is
    chosen and pays the total. Over any window shares follow the weights within one task."""
    total = 0.0
    for w in eligible:
        state.current[w.id] = state.current.get(w.id, 0.0) + max(1, w.weight)
        total += max(1, w.weight)
    chosen = max(sorted(eligible, key=_order), key=lambda w: state.current[w.id])
    state.current[chosen.id] -= total
    return chosen


def least_load(
    eligible: Sequence[WorkerInfo], state: DispatchState, load: Mapping[str, int]
) -> WorkerInfo:
    """The fewest (running + assigned) ÷ capacity; ties: the worker chosen least, then name."""
    return min(
        eligible,
        key=lambda w: (load[w.id] / max(1, w.capacity), state.chosen[w.id], _order(w)),
    )


def pick_random(eligible: Sequence[WorkerInfo], state: DispatchState) -> WorkerInfo:
    """Uniformly at random (seed `state.rng` for reproducible tests)."""
    return state.rng.choice(sorted(eligible, key=_order))


def choose(
    strategy: str,
    eligible: Sequence[WorkerInfo],
    state: DispatchState,
    load: Mapping[str, int],
) -> WorkerInfo:
    """The worker `strategy` picks among `eligible` (not empty)."""
    pickers: dict[str, Callable[[], WorkerInfo]] = {
        "round_robin": lambda: round_robin(eligible, state),
        "weighted": lambda: weighted(eligible, state),
        "least_load": lambda: least_load(eligible, state, load),
        "random": lambda: pick_random(eligible, state),
    }
    if strategy not in pickers:
        raise ValueError(f"unknown dispatch strategy {strategy!r}")
    chosen = pickers[strategy]()
    state.chosen[chosen.id] += 1
    return chosen


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
        eligible = [
            w
            for w in workers
            if load[w.id] < w.capacity and transitions.selector_matches(task.selector, w.labels)
        ]
        if not eligible:
            continue
        chosen = choose(strategy, eligible, state, load)
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
