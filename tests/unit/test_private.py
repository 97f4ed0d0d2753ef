"""Local state is owner-only whatever the umask: `.runner/`, the SQLite file and its companions,
the log folders and files (docs/SECURITY.md)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import config, errors, models, private
from runner.executor import Executor
from runner.store import open_store


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_private_sqlite_store_and_its_folders_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "state" / ".runner" / "state.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.list_runs()
    finally:
        store.close()
    assert _mode(tmp_path / "state") == 0o700
    assert _mode(db.parent) == 0o700
    assert _mode(db) == 0o600
    companions = [p for p in db.parent.iterdir() if p.name.startswith("state.db-")]
    wal = [p for p in companions if p.name in ("state.db-wal", "state.db-shm")]
    assert all(_mode(p) == 0o600 for p in wal), [(p.name, oct(_mode(p))) for p in wal]


@pytest.mark.usefixtures("umask_022")
def test_private_existing_store_file_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch(mode=0o640)
    os.chmod(db, 0o640)
    open_store(f"sqlite:///{db}").close()
    assert _mode(db) == 0o640


@pytest.mark.usefixtures("umask_022")
def test_private_log_folders_and_files_are_owner_only(tmp_path: Path) -> None:
    logs = tmp_path / ".runner" / "logs"
    ex = Executor(slots=1, log_dir=str(logs), log_limit=4096)
    try:
        spec = models.TaskSpec(id="t", name="t", kind=models.Kind.RUN, run="echo secret")
        result = ex.run(spec, env={}, log_name="run-1/t.1", cancel=threading.Event())
    finally:
        ex.close()
    assert result.succeeded
    for folder in (tmp_path / ".runner", logs, logs / "run-1"):
        assert _mode(folder) == 0o700, folder
    assert _mode(logs / "run-1" / "t.1.log") == 0o600


@pytest.mark.usefixtures("umask_022")
def test_private_make_folders_creates_every_missing_level(tmp_path: Path) -> None:
    private.make_folders(str(tmp_path / "a" / "b" / "c"))
    for sub in ("a", "a/b", "a/b/c"):
        assert _mode(tmp_path / sub) == 0o700


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNNER_LOG_LIMIT": "lots"}, "RUNNER_LOG_LIMIT='lots': expected a number of bytes"),
        ({"RUNNER_LEASE_TTL": "soon"}, "RUNNER_LEASE_TTL='soon': expected a number of seconds"),
        ({"RUNNER_LOG_LIMIT": "0"}, "RUNNER_LOG_LIMIT='0': must be greater than 0"),
    ],
)
def test_config_log_limit_is_a_number_of_bytes(env: dict[str, str], message: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.from_env(env)
    assert str(info.value) == message


def test_config_log_dir_and_limit_from_the_environment() -> None:
    settings = config.from_env({"RUNNER_LOG_DIR": "/srv/logs", "RUNNER_LOG_LIMIT": "2048"})
    assert (settings.log_dir, settings.log_limit) == ("/srv/logs", 2048)
