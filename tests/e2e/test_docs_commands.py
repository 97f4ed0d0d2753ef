"""Every `runner` command in the README's and the docs' `sh` blocks runs as written.

Each block runs top to bottom in a scratch folder holding copies of `examples/` and
`workflows/`, on the default store there (`.runner/state.db`), as a user pasting it would:
`RUN` stands for `@latest`, and `127.0.0.1:2379` (the etcd of the examples) for the test's own
etcd. Long-running commands (worker, scheduler, serve, ui) must come up, say they serve, and
stop cleanly on SIGTERM. Other programs in those blocks are run by other tests: `docker` (the
image and the compose cluster, with podman: tests/container), `etcdctl` (the least-privilege
roles: tests/integration/test_etcd_security.py), and `pip` and the Quick start's
`python3 -m venv ...` lines (CI's `.ci/run` makes a fresh venv and installs the same way).
Blocks that are templates to adapt (placeholder hosts and files) are fenced `text`, not `sh`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import REPO, Cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
OTHERS = {"docker", "pip", "etcdctl", "python3"}  # run elsewhere: see the module docstring
SERVING = {
    "worker": "serving",
    "scheduler": "scheduler ",
    "serve": "serving",
    "ui": "runner ui: http://",
}
GLOBAL_FLAGS_WITH_VALUE = {"--store"}


ASSIGNMENT = re.compile(r"^(?:[A-Z_]+=(?:\$\([^)]*\)|\S+)\s+)+")


def _commands(text: str) -> list[str]:
    found: list[str] = []
    for block in BLOCK.findall(text):
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).strip()
            found.extend(part.strip() for part in line.split("; ") if part.strip())
    return found


# PERFORMANCE.md records the benchmark commands that made its figures (tests/e2e/test_bench.py
# runs the workloads); DEPLOY.md's commands talk to the compose cluster (tests/container runs it).
ELSEWHERE = {"PERFORMANCE.md", "DEPLOY.md"}


def _program(command: str) -> str:
    """The program a shell line runs, past any `VAR=value` assignments before it."""
    return shlex.split(ASSIGNMENT.sub("", command))[0]


def _files() -> list[Path]:
    return [
        p
        for p in DOCS
        if p.name not in ELSEWHERE
        and any(_program(c) == "runner" for c in _commands(p.read_text()))
    ]


def _subcommand(argv: list[str]) -> str:
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in GLOBAL_FLAGS_WITH_VALUE else rest[1:]
    return rest[0] if rest else ""


class Shell:
    """A scratch folder with the repo's examples, `runner` on PATH, the default store."""

    def __init__(self, cwd: Path, etcd: str | None) -> None:
        self.cwd = cwd
        self.etcd = etcd
        for folder in ("examples", "workflows", "deploy"):
            shutil.copytree(REPO / folder, cwd / folder)
        bindir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        self.env.update(PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))

    def text(self, command: str) -> str:
        text = re.sub(r"\bRUN\b", "@latest", command)
        if self.etcd is not None:
            text = re.sub(r"127\.0\.0\.1:2379(,127\.0\.0\.1:\d+)*", self.etcd, text)
        return text

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def serve(self, command: str, ready: str) -> tuple[int, str]:
        """Start a long-running command, wait until it says it serves, SIGTERM it."""
        log = self.cwd / "serving.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        Cli.live.append(proc)  # killed by the e2e conftest if the test stops half-way
        deadline = time.monotonic() + 60
        while ready not in log.read_text() and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling the command's own output for its ready line
        started = ready in log.read_text()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        output = log.read_text()
        assert started, f"{command!r} never said {ready!r}:\n{output}"
        return code, output


@pytest.fixture
def etcd_endpoint(request: pytest.FixtureRequest, doc: Path) -> str | None:
    if "etcd://" not in doc.read_text():
        return None
    server: Any = request.getfixturevalue("etcd_server")
    return str(server.url).removeprefix("etcd://")


@pytest.fixture(params=_files(), ids=lambda p: p.name)
def doc(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_every_command_of_the_docs_sh_blocks_runs_as_written(
    doc: Path, tmp_path: Path, etcd_endpoint: str | None
) -> None:
    shell = Shell(tmp_path, etcd_endpoint)
    ran = 0
    for command in _commands(doc.read_text()):
        program = _program(command)
        if program in OTHERS:
            continue
        assert program == "runner", f"{doc.name}: unknown program in {command!r}"
        argv = shlex.split(ASSIGNMENT.sub("", command))
        text = shell.text(command)
        sub = _subcommand(argv)
        if sub in SERVING and "drain" not in argv and "--help" not in argv:
            code, output = shell.serve(text, SERVING[sub])
            assert code in (0, 143), f"{doc.name}: {text!r} exited {code}:\n{output}"
            assert "Traceback" not in output, output
        else:
            res = shell.run(text)
            assert res.returncode == 0, (
                f"{doc.name}: {text!r} exited {res.returncode}:\n{res.stderr}"
            )
            assert "Traceback" not in res.stderr, res.stderr
        ran += 1
    assert ran > 0
