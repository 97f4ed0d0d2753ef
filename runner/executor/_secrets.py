"""Secret env values: read when an attempt starts, masked as `***` in everything it prints.

A task's `env: {NAME: {fromEnv: VAR}}` or `{fromFile: PATH}` is only a reference in the plan
and the store; the executor reads the value from the worker's environment or the file right
before the attempt starts (docs/SECURITY.md). `Masker` replaces every secret in the attempt's
output stream, also one split across two writes: it holds back the end of a chunk while it
could still be the start of a secret (at most len(longest secret) - 1 bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runner.models import SecretRef

MASK = b"***"
MIN_LINE = 4  # each line of a multi-line secret this long or longer is masked on its own


class SecretError(Exception):
    """A secret reference cannot be read; the message says which and what to do."""


def resolve(refs: Mapping[str, SecretRef], source: Mapping[str, str]) -> dict[str, str]:
    """The values of `refs`, from the environment `source` or files. Raises SecretError."""
    values: dict[str, str] = {}
    for name, ref in refs.items():
        if ref.from_env:
            value = source.get(ref.from_env)
            if value is None:
                raise SecretError(
                    f"secret env {name}: the variable {ref.from_env} is not set where the worker "
                    "runs; set it there (see docs/SECURITY.md)"
                )
        else:
            value = _read(name, ref.from_file or "")
        values[name] = value
    return values


def _read(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise SecretError(
            f"secret env {name}: cannot read {path} where the worker runs: {exc.strerror}"
        ) from None


def patterns(values: Iterable[str]) -> list[bytes]:
    """What to mask for these values: each value, and each longer line of a multi-line one;
    longest first, so a secret that contains another is masked whole."""
    found: set[bytes] = set()
    for value in values:
        if not value:
            continue
        found.add(value.encode())
        if "\n" in value:
            found.update(line.encode() for line in value.splitlines() if len(line) >= MIN_LINE)
    return sorted(found, key=len, reverse=True)


def mask_text(text: str, values: Iterable[str]) -> str:
    for secret in patterns(values):
        text = text.replace(secret.decode(errors="replace"), "***")
    return text


class Masker:
    """Masks secrets in a stream of chunks; `flush` returns what it held back at the end."""

    __slots__ = ("_carry", "_secrets")

    def __init__(self, secrets: list[bytes]) -> None:
        self._secrets = secrets
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data
        for secret in self._secrets:
            if secret in buf:
                buf = buf.replace(secret, MASK)
        hold = self._hold(buf)
        self._carry = buf[len(buf) - hold :] if hold else b""
        return buf[: len(buf) - hold]

    def flush(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry

    def _hold(self, buf: bytes) -> int:
        """The length of the longest end of `buf` that starts some secret (0: none)."""
        longest = min(len(self._secrets[0]) - 1, len(buf))
        for size in range(longest, 0, -1):
            end = buf[-size:]
            if any(s.startswith(end) for s in self._secrets):
                return size
        return 0
