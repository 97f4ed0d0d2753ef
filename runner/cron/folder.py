"""Keeping a folder of workflow files applied, as GitOps tools do.

New and changed files with a `spec.schedule` are registered, a deleted file's schedule is
removed, and an invalid file is reported with its FILE:LINE:COL errors and skipped without
touching the others (its previous schedule, if any, stays as it was). Files without a schedule
are ignored. Only schedules whose source file lies in the folder are ever removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runner import errors, workflow
from runner.cron import fire
from runner.store.base import Store

logger = logging.getLogger(__name__)
PATTERNS = ("*.yaml", "*.yml")


class FolderSync:
    """Applies the folder's files; remembers each file's (mtime, size) to skip unchanged ones."""

    def __init__(
        self, store: Store, folder: Path, *, report: Callable[[str], None], anchor: bool = True
    ) -> None:
        self.store = store
        self.anchor = anchor  # paths resolve against the file's folder (one machine: SQLite)
        self.folder = folder.resolve()
        self.report = report
        self._seen: dict[Path, tuple[int, int]] = {}
        self._names: dict[Path, str | None] = {}  # valid file -> its schedule (None: no schedule)

    def files(self) -> list[Path]:
        """The workflow files in the folder, sorted."""
        found = {p.resolve() for pattern in PATTERNS for p in self.folder.glob(pattern)}
        return sorted(p for p in found if p.is_file())

    def sync(self, *, now: float) -> None:
        """Apply new and changed files, then remove schedules whose file is gone."""
        if not self.folder.is_dir():
            self.report(f"{self.folder}: not a folder; nothing to apply")
            return
        present = self.files()
        for path in present:
            self._apply(path, now=now)
        for gone in set(self._seen) - set(present):
            self._seen.pop(gone, None)
            self._names.pop(gone, None)
        self._remove_orphans()

    def _apply(self, path: Path, *, now: float) -> None:
        try:
            stat = path.stat()
        except OSError:
            return
        signature = (stat.st_mtime_ns, stat.st_size)
        if self._seen.get(path) == signature:
            return
        self._seen[path] = signature
        try:
            plan = workflow.load_plan(path, anchor=path.parent if self.anchor else None)
        except errors.WorkflowInvalid as exc:
            self.report(f"{exc.message}\n{path}: skipped; its schedule (if any) is unchanged")
            return
        except OSError as exc:
            self.report(f"{path}: cannot read ({exc.strerror}); skipped")
            return
        self._names[path] = None if plan.schedule is None else plan.workflow
        if plan.schedule is None:
            return
        if (other := self._claimed_by(plan.workflow, path)) is not None:
            self.report(
                f"{path}: schedule {plan.workflow} is registered from {other}, which claims "
                "the same name (metadata.name); skipped: rename one of them"
            )
            return
        if fire.register(self.store, plan, now=now):
            self.report(f"{path}: schedule {plan.workflow} applied")

    def _claimed_by(self, name: str, path: Path) -> str | None:
        """The other file an existing schedule `name` was registered from, if that file
        still exists (a file that is gone may hand its schedule over)."""
        try:
            source = self.store.get_schedule(name).source
        except errors.ScheduleNotFound:
            return None
        if source and Path(source) != path and Path(source).exists():
            return source
        return None

    def _remove_orphans(self) -> None:
        """Delete schedules sourced from this folder whose file is gone, or whose file is now
        valid and defines another workflow or no schedule."""
        for entry in self.store.list_schedules():
            source = Path(entry.source) if entry.source else None
            if source is None or source.parent != self.folder:
                continue
            if not source.exists():
                self._delete(entry.name, f"{source}: file removed")
            elif source in self._names and self._names[source] != entry.name:
                now_defines = self._names[source] or "no schedule"
                self._delete(entry.name, f"{source}: now defines {now_defines}")

    def _delete(self, name: str, why: str) -> None:
        try:
            self.store.delete_schedule(name)
        except errors.ScheduleNotFound:
            return
        self.report(f"{why}; schedule {name} removed")
