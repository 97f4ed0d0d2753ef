"""A ledger task: appends `{task, attempt, token, pid, event, t}` JSON lines to a file.

Run as a task (`args: [python, ledger.py, LEDGER, ...]`), it records `start`, a `tick` every
TICK seconds while it runs, and `end` (or `term` on SIGTERM). Fault tests count executions and
measure overlaps from these side effects, not from what runner says about itself. `t` is
CLOCK_MONOTONIC, which is one clock for every process on the machine. Imported by the tests, it
parses a ledger. Standard library only, so it runs as a plain script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK = 0.02
GAP = 0.25  # ticks further apart than this mean the process was not running in between


def _record(fd: int, event: str, **extra: Any) -> None:
    line = {
        "run": os.environ.get("RUNNER_RUN_ID", ""),
        "task": os.environ.get("RUNNER_TASK_ID", ""),
        "attempt": int(os.environ.get("RUNNER_ATTEMPT", "0")),
        "token": os.environ.get("RUNNER_FENCING_TOKEN", ""),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "event": event,
        "t": time.monotonic(),
        **extra,
    }
    # one write of a short O_APPEND line: lines of concurrent attempts never interleave
    os.write(fd, (json.dumps(line) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("ledger")
    p.add_argument("--until-file", help="end once this file exists")
    p.add_argument("--seconds", type=float, help="end after this many seconds")
    p.add_argument(
        "--hold-attempts",
        type=int,
        default=0,
        help="attempts up to N ignore --seconds: they end only once --until-file exists",
    )
    args = p.parse_args(argv)
    fd = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_term(signum: int, frame: object) -> None:
        _record(fd, "term")
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    attempt = int(os.environ.get("RUNNER_ATTEMPT", "0"))
    started = time.monotonic()
    _record(fd, "start")
    while True:
        if args.until_file and os.path.exists(args.until_file):
            break
        held = attempt <= args.hold_attempts
        if not held and args.seconds is not None and time.monotonic() - started >= args.seconds:
            break
        time.sleep(TICK)
        _record(fd, "tick")
    _record(fd, "end")
    return 0


# ---------------------------------------------------------------------- reading a ledger


@dataclass(frozen=True, slots=True)
class Execution:
    """One process of one attempt, as its ledger lines show it."""

    task: str
    attempt: int
    token: str
    pid: int
    ppid: int
    start: float
    last: float  # the last line it wrote
    ended: bool  # it wrote `end` (exited 0 on its own)
    active: tuple[tuple[float, float], ...]  # spans it was running (ticks no more than GAP apart)


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def executions(path: Path) -> list[Execution]:
    """Every process the ledger saw, by start time."""
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in read(path):
        lines[line["pid"]].append(line)
    out = []
    for pid, rows in lines.items():
        times = sorted(r["t"] for r in rows)
        spans: list[tuple[float, float]] = []
        begin = prev = times[0]
        for t in times[1:]:
            if t - prev > GAP:
                spans.append((begin, prev))
                begin = t
            prev = t
        spans.append((begin, prev))
        first = rows[0]
        out.append(
            Execution(
                task=first["task"],
                attempt=first["attempt"],
                token=first["token"],
                pid=pid,
                ppid=first["ppid"],
                start=times[0],
                last=times[-1],
                ended=any(r["event"] == "end" for r in rows),
                active=tuple(spans),
            )
        )
    return sorted(out, key=lambda e: e.start)


def overlap(a: Execution, b: Execution) -> float:
    """Seconds during which both processes were running (their active spans intersect)."""
    total = 0.0
    for a0, a1 in a.active:
        for b0, b1 in b.active:
            total += max(0.0, min(a1, b1) - max(a0, b0))
    return total


def max_overlap(execs: list[Execution]) -> float:
    """The largest overlap between two executions of one task."""
    worst = 0.0
    for i, a in enumerate(execs):
        for b in execs[i + 1 :]:
            if a.task == b.task:
                worst = max(worst, overlap(a, b))
    return worst


if __name__ == "__main__":
    sys.exit(main())
