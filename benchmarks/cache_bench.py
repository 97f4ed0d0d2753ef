"""Cached tasks: the second `runner apply` of an unchanged example against the first.

Runs examples/cached.yaml twice with the real CLI on a fresh SQLite store in a scratch folder
and prints each run's duration (created to finished, as `runner get run` reports it) and their
ratio. docs/WORKFLOW.md "Cached tasks" promises a second run under 10% of the first: every task
is restored from the cache and no task process starts.

    python benchmarks/cache_bench.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _apply(cwd: Path, env: dict[str, str]) -> float:
    def runner(*args: str) -> str:
        cmd = [sys.executable, "-m", "runner", *args]
        return subprocess.run(
            cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout

    runner("apply", "cached.yaml", "--workers", "2")
    run = json.loads(runner("get", "run", "@latest", "-o", "json"))
    return _seconds(run["finished_at"]) - _seconds(run["created_at"])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        shutil.copytree(REPO / "examples", cwd, dirs_exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        env["RUNNER_STORE"] = f"sqlite:///{cwd / 'state.db'}"
        env["PYTHONPATH"] = str(REPO)
        first = _apply(cwd, env)
        second = _apply(cwd, env)
    ratio = second / first
    print(f"first run {first:.3f}s, second run {second:.3f}s, ratio {ratio:.1%}")
    return 0 if ratio < 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
