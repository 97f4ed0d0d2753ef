"""The benchmark's no-op task, in a module of its own that imports only `time`: a call child
imports a task's module on its first call, and importing `runner.bench` (the store, the engine)
cost each child ~0.2 s of CPU, more than a W1 run spends on 500 tasks."""

from __future__ import annotations

import time


def noop() -> dict[str, str]:
    """Return the start and end times, so hand-off latency can be computed (W2)."""
    start = time.time()
    return {"start": repr(start), "end": repr(time.time())}
