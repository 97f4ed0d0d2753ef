"""From the last task's end to the `runner apply` process's exit, as a CI step sees it.

Runs `runner apply examples/hello.yaml -o json` on a fresh embedded store N times and prints
the median of (the moment `subprocess.run` returned: exit seen and output pipes closed) minus
(the attempt's recorded end, from the JSON). Both clocks are this machine's wall clock; the
recorded end has millisecond resolution (docs/PERFORMANCE.md, "Fast by default").

    python benchmarks/exit_latency.py [--tries 20]

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _ended_at(doc: dict) -> float:
    ends = [a["finished_at"] for task in doc["tasks"] for a in task["attempts"]]
    return max(datetime.fromisoformat(e.replace("Z", "+00:00")).timestamp() for e in ends)


def once(folder: str) -> float:
    """Milliseconds from the last attempt's recorded end to the process's exit."""
    env = {**os.environ, "RUNNER_STORE": f"sqlite:///{folder}/exit.db"}
    argv = [sys.executable, "-m", "runner", "apply", "examples/hello.yaml", "-o", "json"]
    done = subprocess.run(argv, capture_output=True, env=env, cwd=REPO, check=True)
    seen = time.time()
    return (seen - _ended_at(json.loads(done.stdout))) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tries", type=int, default=20)
    args = ap.parse_args()
    samples = []
    for _ in range(args.tries):
        with tempfile.TemporaryDirectory(prefix="runner-exit-") as tmp:
            samples.append(once(tmp))
    print(f"load {os.getloadavg()[0]:.1f}")
    print(
        f"last task's end -> exit, ms: median {statistics.median(samples):.1f}"
        f" (min {min(samples):.1f}, max {max(samples):.1f}, {args.tries} tries)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
