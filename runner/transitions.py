"""Pure rules of a run's state machine, shared by every store backend.

A backend reads what a rule needs inside its transaction, asks the rule, and writes the
answer in the same transaction; the rules themselves never touch a store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from runner.models import Reason, RunState, TaskSpec, TaskState, When

# A dependency as the rules see it: its terminal state and whether it may fail.
DepState = tuple[TaskState, bool]

_OUTPUT_REF = re.compile(r"\$\{\{\s*tasks\.([A-Za-z0-9_.\-\[\]=,]+?)\.outputs\.")


def dep_ok(state: TaskState, allow_failure: bool) -> bool:
    """A dependency that lets a `when: success` task run."""
    return state is TaskState.SUCCEEDED or (state is TaskState.FAILED and allow_failure)


def decide(when: When, deps: Iterable[DepState]) -> TaskState:
    """Whether a task whose dependencies are all terminal runs (READY) or is SKIPPED.

    success: every dependency succeeded (or failed with allowFailure);
    failure: some dependency failed; always: runs whatever happened upstream.
    A skipped or cancelled dependency counts as neither success nor failure.
    """
    deps = list(deps)
    if when is When.ALWAYS:
        return TaskState.READY
    if when is When.FAILURE:
        failed = any(s is TaskState.FAILED for s, _ in deps)
        return TaskState.READY if failed else TaskState.SKIPPED
    return TaskState.READY if all(dep_ok(s, a) for s, a in deps) else TaskState.SKIPPED


def retry_delay(spec: TaskSpec, failed_attempts: int, reason: Reason) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failed attempts (counting the one
    that just ended), or None when the task has no retry left or the reason is not retried."""
    if reason not in (Reason.EXIT, Reason.TIMEOUT):
        return None
    if failed_attempts > spec.retries.limit:
        return None
    return spec.retries.delay_for(failed_attempts)


def counts_as_failure(state: TaskState, allow_failure: bool) -> bool:
    """A terminal task that makes its run fail."""
    return state is TaskState.FAILED and not allow_failure


def run_outcome(tasks: Iterable[DepState], *, cancelled: bool = False) -> RunState:
    """The final state of a run whose tasks are all terminal."""
    if cancelled:
        return RunState.CANCELLED
    if any(counts_as_failure(s, a) for s, a in tasks):
        return RunState.FAILED
    return RunState.SUCCEEDED


def output_refs(spec: TaskSpec) -> set[str]:
    """Names of the tasks whose outputs the spec's templates reference."""
    texts: list[str] = []
    if spec.run:
        texts.append(spec.run)
    texts.extend(spec.args or ())
    texts.extend(str(v) for v in spec.with_.values())
    texts.extend(spec.env.values())
    return {m.group(1) for text in texts for m in _OUTPUT_REF.finditer(text)}


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str] | None) -> bool:
    """A task's selector matches a worker whose labels include every selector pair."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())
