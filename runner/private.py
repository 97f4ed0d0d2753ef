"""Owner-only files and folders for runner's local state (`.runner/`, the SQLite file, logs).

Task output and the database can hold anything a task printed, so runner creates them readable
by their owner only (folders 0700, files 0600) whatever the umask (docs/SECURITY.md). Folders
and files that already exist keep their modes: they were chosen by someone.
"""

from __future__ import annotations

import contextlib
import os

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def make_folders(path: str) -> None:
    """Create `path` and each missing parent owner-only (os.makedirs gives the parents the
    umask's mode)."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(folder, FOLDER_MODE)
            os.chmod(folder, FOLDER_MODE)  # a umask can only have taken bits away; be exact


def make_file(path: str) -> None:
    """Create an empty owner-only file at `path` (and its folders) unless it exists."""
    make_folders(os.path.dirname(path) or ".")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
