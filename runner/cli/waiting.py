"""Why a run waits when no worker will pick it up, said by `apply`, `retry` and `get run`;
and what `--timeout` did to it.

The store gives each queued task its waiting reason ("waiting: no live worker matches gpu=true",
a full lock, else "queued"); a plain "queued" with no live worker at all is the case a store
cannot tell from a busy cluster, so the CLI names it: "waiting: no live worker". Each reason
comes with the command that starts a worker able to run the task (docs/CLI.md, "Waiting runs").
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from runner import errors
from runner.cli.output import human_seconds
from runner.cli.progress import DETAIL_MAX
from runner.models import Run, TaskState

if TYPE_CHECKING:
    from runner.store import Store

NO_WORKER = "waiting: no live worker"
_NO_MATCH = "waiting: no live worker matches "
REPEAT = 10.0  # seconds between two reminders while a run still waits


def with_reasons(store: Store, run: Run, *, local: bool = False) -> Run:
    """`run` with "waiting: no live worker" as the reason of its queued tasks when no live,
    non-draining worker exists (`local`: the caller runs workers of its own, which count)."""
    queued = [t for t in run.tasks if t.state is TaskState.READY and t.waiting_reason == "queued"]
    if local or not queued:
        return run
    if any(not w.draining for w in store.list_workers(now=time.time())):
        return run
    tasks = tuple(
        dataclasses.replace(t, waiting_reason=NO_WORKER)
        if t.state is TaskState.READY and t.waiting_reason == "queued"
        else t
        for t in run.tasks
    )
    return dataclasses.replace(run, tasks=tasks)


def hint(run: Run, cli: str) -> str | None:
    """One line saying that (and why) no worker will pick the run's queued tasks up, with the
    command to start one; None when some worker can."""
    reasons = [t for t in run.tasks if t.state is TaskState.READY and _unserved(t.waiting_reason)]
    if not reasons:
        return None
    first = reasons[0]
    why = (first.waiting_reason or NO_WORKER).removeprefix("waiting: ")
    start = f"{cli} worker"
    if first.waiting_reason and first.waiting_reason.startswith(_NO_MATCH):
        start += f" --labels {first.waiting_reason.removeprefix(_NO_MATCH)}"
    who = first.id if len(reasons) == 1 else f"{first.id} and {len(reasons) - 1} more"
    return f"run {run.id} waits: {why} for {who}; start one with `{start}`"


def say_if_unserved(store: Store, run_id: str, *, cli: str) -> None:
    """After `--detach`: say at once (on stderr) when no live worker will pick the run up."""
    line = hint(with_reasons(store, store.get_run(run_id)), cli)
    if line is not None:
        print(f"runner: {line}", file=sys.stderr, flush=True)


def gave_up(run_id: str, *, after: float, cli: str, handed: int | None) -> str:
    """What `--timeout` did to the run and how to go on (docs/CLI.md, "--timeout"): `handed`
    running tasks went back to the queue, or (None) there were no local workers."""
    head = f"gave up waiting for run {run_id} after {human_seconds(after)} (--timeout)"
    follow = f"follow it with `{cli} get run {run_id} --watch`"
    if handed is None:  # no local workers: the store's workers go on with it
        return f"{head}; it goes on with the store's workers; {follow}"
    return (
        f"{head}; the local workers stopped and {handed} running task(s) went back to the "
        f"queue: the run waits for any worker. Finish it here with `{cli} apply --resume "
        f"{run_id}`, or start a worker with `{cli} worker`; {follow}"
    )


def _unserved(reason: str | None) -> bool:
    return reason is not None and (reason == NO_WORKER or reason.startswith(_NO_MATCH))


class Watch:
    """A thread that says at once, and every `REPEAT` seconds while it lasts, when no live
    worker will run the followed run's queued tasks (`apply` and `retry` without a worker
    that can)."""

    def __init__(self, store: Store, run_id: str, *, cli: str, local: bool) -> None:
        self.store, self.run_id, self.cli, self.local = store, run_id, cli, local
        self.stream: TextIO = sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="waiting", daemon=True)
        self._done: int | None = None  # a large run's finished tasks at the last look

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop saying it; returns within a second even when a store read of the thread is
        slow (the thread is a daemon and prints nothing once stopped)."""
        self._stop.set()
        # an interrupt may cut `start` short: a thread that never started has nothing to join
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=1.0)

    def _loop(self) -> None:
        said: str | None = None
        said_at = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            line = self._check()
            took = time.monotonic() - began
            if self._stop.is_set():
                return
            if line is not None and (line != said or time.monotonic() - said_at >= REPEAT):
                print(f"runner: {line}", file=self.stream, flush=True)
                said, said_at = line, time.monotonic()
            elif line is None:
                said = None
            self._stop.wait(max(2.0, 10 * took))  # a look at a large run is not free

    def _check(self) -> str | None:
        try:
            if self._progressing():
                return None
            run = self.store.get_run(self.run_id)
            if run.state.terminal:
                return None
            return hint(with_reasons(self.store, run, local=self.local), self.cli)
        except errors.RunnerError:  # the follower reports store trouble itself
            return None

    def _progressing(self) -> bool:
        """Whether a large run (more than DETAIL_MAX tasks, whose every task a look reads)
        finished tasks since the last look: it is served, so it is not read whole; a stalled
        one is (a worker may serve some of its tasks and none the rest)."""
        summary = self.store.get_run(self.run_id, tasks=False)
        if summary.tasks_total <= DETAIL_MAX:
            return False
        done, self._done = self._done, summary.tasks_done
        return summary.state.terminal or done != summary.tasks_done
