"""The SQLite store's disk fills up during `runner apply` (issue 15, item 4): apply exits 3 in
bounded time, its log says so a few times (not every 0.2 s), and once space is freed
`apply --resume` finishes the run with nothing lost.

The disk is a small tmpfs this test mounts and unmounts (root only; skipped elsewhere)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Cli, wait_for

LEASE_TTL = 1.0  # apply gives up after 3 TTLs of failing writes (runner.cli.run_cmds)
EXIT_STORE = 3


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return


def test_full_disk_makes_apply_exit_3_quietly_and_the_run_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    cli = Cli(tmp_path, store=f"sqlite:///{small_disk / 'state.db'}")
    cli.env["RUNNER_LOG_DIR"] = str(tmp_path / "logs")  # only the store is on the small disk
    wf = cli.workflow("slow.yaml")
    proc = cli.start("apply", wf, "--workers", "1", "--lease-ttl", str(LEASE_TTL))
    wait_for(lambda: (tmp_path / "started.txt").exists(), what="the task to start")
    fill(small_disk / "filler")
    (tmp_path / "release").touch()  # the task ends; its result cannot be stored
    start = time.monotonic()
    rc = proc.wait(timeout=60)
    took = time.monotonic() - start
    log = (tmp_path / "proc-1.log").read_text()
    assert rc == EXIT_STORE, log
    assert "giving up" in log
    assert "Traceback" not in log
    # bounded: the give-up bound (3 TTLs) plus the worker's own fencing, far below the timeout
    assert took < 3 * LEASE_TTL + 10, took
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) <= 12, "\n".join(warnings)  # each repeating error at most once per 30 s
    (small_disk / "filler").unlink()
    res = cli.run("apply", "--resume", "@latest", "--workers", "1", "--lease-ttl", str(LEASE_TTL))
    assert res.returncode == 0, res.stdout + res.stderr
    run = cli.get_run("@latest")
    assert run["state"] == "succeeded"
    attempts = run["tasks"][0]["attempts"]
    assert [a["state"] for a in attempts].count("succeeded") == 1
    assert (tmp_path / "started.txt").read_text().count("\n") == len(attempts)
