"""Attempt log tails on etcd: bounded chunks plus a small meta record per attempt.

An attempt's log is a list of chunks `log/{run}/{task}/{attempt}/{k}` of at most CHUNK bytes;
the meta record lists the kept chunks and their sizes. Appending rewrites the last chunk while
it has room, adds chunks, and drops the oldest chunks no longer needed for the last `limit`
bytes, so no value exceeds CHUNK and an attempt keeps about `limit` + CHUNK bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHUNK = 256 * 1024


@dataclass
class LogPlan:
    """What one append writes: the new meta and the chunk puts and deletes."""

    meta: dict[str, Any]
    puts: list[tuple[int, bytes]] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)


def needs_last(meta: dict[str, Any] | None, size: int) -> int | None:
    """The chunk number whose content an append of `size` bytes rewrites, if any."""
    if not meta or not meta["chunks"]:
        return None
    k, length = meta["chunks"][-1]
    return int(k) if length + size <= CHUNK else None


def plan_append(
    meta: dict[str, Any] | None, last: bytes | None, data: bytes, *, limit: int
) -> LogPlan:
    """Append `data` to a log described by `meta` (None: empty), `last` being the content of
    the chunk `needs_last` named. Keeps at least the last `limit` bytes."""
    data = data[-limit:] if limit > 0 else b""
    chunks: list[list[int]] = [list(c) for c in (meta or {}).get("chunks", [])]
    nxt = int((meta or {}).get("next", 0))
    plan = LogPlan(meta={})
    if last is not None and chunks:
        room = CHUNK - len(last)
        head, data = data[:room], data[room:]
        plan.puts.append((chunks[-1][0], last + head))
        chunks[-1][1] = len(last) + len(head)
    for i in range(0, len(data), CHUNK):
        piece = data[i : i + CHUNK]
        plan.puts.append((nxt, piece))
        chunks.append([nxt, len(piece)])
        nxt += 1
    total = sum(n for _, n in chunks)
    while len(chunks) > 1 and total - chunks[0][1] >= limit:
        total -= chunks[0][1]
        plan.deletes.append(chunks.pop(0)[0])
    plan.meta = {"chunks": chunks, "next": nxt}
    return plan


def tail(chunks: list[bytes], limit: int) -> str:
    """The text of the last `limit` bytes of the concatenated chunks."""
    raw = b"".join(chunks)[-limit:] if limit > 0 else b""
    start = 0
    while start < len(raw) and start < 4 and raw[start] & 0xC0 == 0x80:
        start += 1  # a cut through a UTF-8 sequence: drop its continuation bytes
    return raw[start:].decode("utf-8", errors="replace")
