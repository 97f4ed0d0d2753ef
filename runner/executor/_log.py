"""The log of one attempt: timestamped lines written in full to a file, the tail kept in memory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import TracebackType

from runner.executor._secrets import Masker

logger = logging.getLogger(__name__)


class _Clock:
    """ISO-8601 UTC line prefixes (`2024-05-01T12:00:00.123Z `), formatted once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def stamp(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((now - second) * 1000):03d}Z ".encode()


class LogSink:
    """Receives an attempt's raw output in chunks of any size and shape.

    Each line gets the timestamp of the chunk it arrived in (one stamp per read, not per line,
    so a flood of short lines costs a single `bytes.replace`). Bytes are kept as they came:
    partial lines and binary garbage go to the file unchanged, and `tail` decodes the last
    `limit` bytes with `errors="replace"`. Memory is bounded by twice `limit`; a failing log file
    (disk full) is reported once in the tail and the attempt goes on.

    The file is bounded too (RUNNER_LOG_LIMIT, docs/CLI.md): it takes the first `limit` bytes as
    they come; beyond them output is only kept in memory, and `close` appends a line saying how
    many bytes were cut, then the last `limit` bytes. So a file holds at most twice `limit` plus
    that line (a worker killed meanwhile leaves the head only).
    """

    def __init__(self, path: str | Path, *, limit: int, secrets: list[bytes] | None = None) -> None:
        self._limit = limit
        # Secret values are masked before anything is kept, in the file and in the tail.
        self._masker = Masker(secrets) if secrets else None
        self._ring = bytearray()
        self._at_line_start = True
        self._clock = _Clock()
        # Unbuffered: output arrives in reads of up to 256 KiB, and a buffer per attempt costs
        # more than it saves for the many attempts that print little. Opened at the first
        # output: an attempt that prints nothing leaves no file (creating one per attempt was
        # a tenth of a no-op task's CPU).
        self._path = path
        self._fd = -1
        self._file_failed = False
        self._written = 0  # bytes in the file
        self._total = 0  # bytes of output so far

    def write(self, data: bytes) -> None:
        """Append a chunk of output: stamp each line start, then store it."""
        if self._masker is not None:
            data = self._masker.feed(data)
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        stamp = self._clock.stamp()
        body = data.replace(b"\n", b"\n" + stamp)
        if data.endswith(b"\n"):
            body = body[: -len(stamp)]
        if self._at_line_start:
            body = stamp + body
        self._at_line_start = data.endswith(b"\n")
        self._store(body)

    def note(self, message: str) -> None:
        """Add a line of runner's own (`[runner] ...`) on a line of its own."""
        self._release()
        if not self._at_line_start:
            self.write(b"\n")
        self.write(f"[runner] {message}\n".encode(errors="replace"))

    def tail(self) -> str:
        """The last `limit` bytes of the log as text."""
        if self._limit <= 0:
            return ""
        return bytes(self._ring[-self._limit :]).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Write the kept tail after the head if output was cut, then close the file."""
        self._release()
        cut = self._total - self._written - self._limit
        if self._limit > 0 and self._total > self._written and not self._file_failed:
            keep = bytes(self._ring[-min(self._limit, self._total - self._written) :])
            line = f"\n[runner] {max(cut, 0)} bytes of output cut here (RUNNER_LOG_LIMIT="
            self._append(f"{line}{self._limit})\n".encode() + keep)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _release(self) -> None:
        """Write what the masker held back: the output ended, it starts no secret after all."""
        if self._masker is not None:
            self._emit(self._masker.flush())

    def __enter__(self) -> LogSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _store(self, body: bytes) -> None:
        self._total += len(body)
        if self._limit > 0:
            self._ring += body
            if len(self._ring) > 2 * self._limit:
                del self._ring[: -self._limit]
            room = self._limit - self._written
            if room <= 0:
                return  # past the head: the tail goes to the file at close
            body = body[:room]
        self._append(body)
        self._written += len(body)

    def _append(self, body: bytes) -> None:
        if self._file_failed:
            return
        try:
            if self._fd < 0:
                self._fd = os.open(
                    self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
            view = memoryview(body)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._file_error(exc)

    def _file_error(self, exc: OSError) -> None:
        if self._file_failed:
            return
        self._file_failed = True
        logger.warning("log file %s: %s", self._path, exc)
        self._ring += f"\n[runner] log file write failed: {exc}\n".encode(errors="replace")
