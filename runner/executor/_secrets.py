"""Secret env values: read when an attempt starts, masked as `***` in everything it prints.

A task's `env: {NAME: {fromEnv: VAR}}` or `{fromFile: PATH}` is only a reference in the plan
and the store; the executor reads the value from the worker's environment or the file right
before the attempt starts (docs/SECURITY.md). `Masker` replaces every secret in the attempt's
output stream, also one split across two writes: it holds back the end of a chunk while it
could still be the start of a secret (at most len(longest secret) - 1 bytes).
"""

from __future__ import annotations

import re
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
    """Masks secrets in a stream of chunks; `flush` returns what it held back at the end.

    Each `feed` looks at what it held back plus the new chunk and holds back again the longest
    end of it that could still begin a secret (`_hold`). Every secret that starts before that
    end lies wholly inside what it has, so it is masked now, the leftmost first and, at one
    place, the longest; a secret that starts inside the held end is masked once the rest
    arrives."""

    __slots__ = ("_carry", "_pattern", "_secrets")

    def __init__(self, secrets: list[bytes]) -> None:
        self._secrets = secrets
        self._pattern = re.compile(b"|".join(re.escape(s) for s in secrets))  # longest first
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data
        cut = len(buf) - self._hold(buf)
        out: list[bytes] = []
        pos = 0
        for found in self._pattern.finditer(buf):
            if found.start() >= cut:
                break
            out += (buf[pos : found.start()], MASK)
            pos = found.end()
        out.append(buf[pos:cut])
        self._carry = buf[max(pos, cut) :]
        return b"".join(out)

    def flush(self) -> bytes:
        """The end of the stream: what was held back, its secrets masked."""
        carry, self._carry = self._carry, b""
        return self._pattern.sub(MASK, carry)

    def _hold(self, buf: bytes) -> int:
        """The length of the longest end of `buf` that is the start of a secret, shorter than
        it (0: none)."""
        hold = 0
        for secret in self._secrets:
            first = secret[:1]
            at = buf.find(first, max(0, len(buf) - len(secret) + 1))
            while at >= 0 and len(buf) - at > hold:  # the candidates, longest first
                if secret.startswith(buf[at:]):
                    hold = len(buf) - at
                    break
                at = buf.find(first, at + 1)
        return hold
