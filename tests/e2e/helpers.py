"""Drive the real CLI as a subprocess: `python -m runner ...` in a scratch folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

WORKFLOWS = Path(__file__).parent / "workflows"
REPO = Path(__file__).resolve().parents[2]


class Cli:
    """The runner CLI in `cwd`, on a SQLite store in that folder."""

    live: ClassVar[list[subprocess.Popen[bytes]]] = []  # started; conftest reaps leftovers

    def __init__(self, cwd: Path, store: str | None = None) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        self.env["RUNNER_STORE"] = store or f"sqlite:///{cwd / 'state.db'}"
        self.env["PYTHONPATH"] = str(REPO)
        self._started = 0

    def workflow(self, name: str) -> str:
        """Copy a test workflow into the folder; its path relative to the folder."""
        shutil.copy(WORKFLOWS / name, self.cwd / name)
        return name

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a runner process (with `env` added to the folder's environment); its output
        goes to `proc-<n>.log` in the folder."""
        self._started += 1
        with open(self.cwd / f"proc-{self._started}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runner", *args],
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        Cli.live.append(proc)
        return proc

    def get_run(self, run_id: str = "@latest") -> dict[str, Any]:
        res = self.run("get", "run", run_id, "-o", "json")
        assert res.returncode == 0, res.stderr
        data: dict[str, Any] = json.loads(res.stdout)
        return data


def tasks_by_id(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in run["tasks"]}


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30, what: str = "") -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False
