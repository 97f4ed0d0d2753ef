"""The etcd store's key layout (see docs/ARCHITECTURE.md, "etcd data model").

Every key lives under the store prefix. Task ids and run ids are percent-quoted so a `/` inside
one never splits a key. The queue key encodes priority and ready time so one ascending range
read returns the highest priority first, then the earliest ready. The records stored under the
keys are in `records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

PRIORITY_BIAS = 10**9  # queue keys sort ascending; 10**9 - priority puts high priorities first


@lru_cache(maxsize=1 << 16)
def q(part: str) -> str:
    """`part` percent-quoted for a key (cached: the same ids are quoted on every operation)."""
    return quote(part, safe="")


@lru_cache(maxsize=1 << 16)
def _unq(part: str) -> str:
    return unquote(part)


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key of one store prefix."""

    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run/{q(run_id)}"

    def runs(self) -> str:
        return f"{self.prefix}run/"

    def creating(self, run_id: str) -> str:
        """A run being created (`runs.create_run`): held by one submission, on its lease."""
        return f"{self.prefix}creating/{q(run_id)}"

    def run_key(self, key: str) -> str:
        return f"{self.prefix}runkey/{q(key)}"

    def active(self, run_id: str = "") -> str:
        return f"{self.prefix}active/{q(run_id)}"

    def task(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}task/{q(run_id)}/{q(task_id)}"

    def done(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}done/{q(run_id)}/{q(task_id)}"

    def fail(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}fail/{q(run_id)}/{q(task_id)}"

    def prop(self, run_id: str = "", task_id: str = "") -> str:
        if not run_id:
            return f"{self.prefix}prop/"
        return f"{self.prefix}prop/{q(run_id)}/{q(task_id)}"

    def arrived(self, run_id: str, task_id: str, dep_id: str = "") -> str:
        """A dependency of a wide task that became terminal (its state), once per dependency."""
        return f"{self.prefix}arr/{q(run_id)}/{q(task_id)}/{q(dep_id)}"

    def arrivals(self, run_id: str, task_id: str) -> str:
        """The counter of a wide task's arrivals: its version is their number."""
        return f"{self.prefix}cnt/{q(run_id)}/{q(task_id)}"

    def tally(self, run_id: str, shard: str = "") -> str:
        """A counter of the run's `done/` markers: `p{n:03d}` keys' versions count puts of
        new markers, `m{n:03d}` keys' their deletes (`flow.count_done`)."""
        return f"{self.prefix}dcnt/{q(run_id)}/{shard}"

    def gate(self, run_id: str = "", task_id: str = "") -> str:
        """A task with `if:` or forEach to decide, expand or join (runner.store.etcd.gates)."""
        if not run_id:
            return f"{self.prefix}gate/"
        return f"{self.prefix}gate/{q(run_id)}/{q(task_id)}"

    def aged(self, run_id: str = "", task_id: str = "") -> str:
        """A queued task of a run with spec.aging, to promote (runner.store.etcd.aging)."""
        if not run_id:
            return f"{self.prefix}aged/"
        return f"{self.prefix}aged/{q(run_id)}/{q(task_id)}"

    def join(self, run_id: str, task_id: str = "") -> str:
        """A wide task whose dependencies have all arrived, to decide."""
        return f"{self.prefix}join/{q(run_id)}/{q(task_id)}"

    def ending(self, run_id: str = "") -> str:
        return f"{self.prefix}ending/{q(run_id)}"

    def queue(self) -> str:
        return f"{self.prefix}queue/"

    def floor(self) -> str:
        """The queue's floor: a queue key no live queue entry sorts before (`head`)."""
        return f"{self.prefix}qfloor"

    def compaction(self) -> str:
        """The revision proposed for the next compaction of etcd's history (`compaction`)."""
        return f"{self.prefix}compaction"

    def queue_entry(
        self, priority: int, ready_at: float, seq: int, run_id: str, task_id: str
    ) -> str:
        """queue/{10**9 - priority}/{ready time in µs}/{plan order}/{run}/{task}."""
        micros = max(0, round(ready_at * 1_000_000))
        return (
            f"{self.prefix}queue/{PRIORITY_BIAS - priority:010d}/{micros:017d}/{seq:08d}"
            f"/{q(run_id)}/{q(task_id)}"
        )

    def own(self, run_id: str, task_id: str = "") -> str:
        return f"{self.prefix}own/{q(run_id)}/{q(task_id)}"

    def owns(self) -> str:
        return f"{self.prefix}own/"

    def held(self, worker_id: str, run_id: str = "", task_id: str = "") -> str:
        if not run_id:
            return f"{self.prefix}held/{q(worker_id)}/"
        return f"{self.prefix}held/{q(worker_id)}/{q(run_id)}/{q(task_id)}"

    def helds(self) -> str:
        return f"{self.prefix}held/"

    def worker(self, worker_id: str = "") -> str:
        return f"{self.prefix}worker/{q(worker_id)}"

    def log(self, run_id: str, task_id: str, attempt: int) -> str:
        return f"{self.prefix}log/{q(run_id)}/{q(task_id)}/{attempt:06d}/"

    def log_meta(self, run_id: str, task_id: str, attempt: int) -> str:
        return f"{self.prefix}logmeta/{q(run_id)}/{q(task_id)}/{attempt:06d}"

    def schedule(self, name: str = "") -> str:
        return f"{self.prefix}cron/schedule/{q(name)}"

    def cache(self, key: str = "") -> str:
        return f"{self.prefix}cache/{q(key)}"

    def leader(self) -> str:
        return f"{self.prefix}cron/leader"

    def assign_prefix(self, worker_id: str = "") -> str:
        return f"{self.prefix}assign/" + (f"{q(worker_id)}/" if worker_id else "")

    def assign_key(self, worker_id: str, qkey: str) -> str:
        return self.assign_prefix(worker_id) + qkey[len(self.queue()) :]

    def queue_key_of(self, akey: str) -> str:
        """The queue key an assignment came from (and goes back to)."""
        rest = akey[len(self.assign_prefix()) :]
        return self.queue() + rest.split("/", 1)[1]

    def worker_of(self, akey: str) -> str:
        return self.split(akey, "assign")[0]

    def task_of(self, entry_key: str) -> tuple[str, str]:
        """(run, task) of a queue entry or an assignment."""
        parts = self.split(entry_key, "queue" if entry_key.startswith(self.queue()) else "assign")
        return parts[-2], parts[-1]

    def lock_prefix(self, name: str = "") -> str:
        return f"{self.prefix}lock/" + (f"{q(name)}/" if name else "")

    def lock_key(self, name: str, run_id: str, task_id: str) -> str:
        return f"{self.lock_prefix(name)}{q(run_id)}/{q(task_id)}"

    def group(self, name: str, run_id: str = "") -> str:
        """cgroup/{group}/{run}: an unfinished run of a concurrency group (`groups`)."""
        return f"{self.prefix}cgroup/{q(name)}/{q(run_id)}"

    def dispatch_key(self) -> str:
        return f"{self.prefix}cluster/dispatch"

    def split(self, key: str, kind: str) -> list[str]:
        """The unquoted parts of `key` after `{prefix}{kind}/`."""
        rest = key[len(self.prefix) + len(kind) + 1 :]
        return [_unq(p) for p in rest.split("/")]

    def hook(self, run_id: str, index: int | None = None) -> str:
        """`hook/{run}/{index:04d}`: a recorded delivery (prefix of the run's without index)."""
        tail = "" if index is None else f"{index:04d}"
        return f"{self.prefix}hook/{q(run_id)}/{tail}"

    def hook_due(self, run_id: str = "", index: int | None = None) -> str:
        """`hookdue/{run}/{index:04d}`: present while the delivery is due or delivering."""
        if not run_id:
            return f"{self.prefix}hookdue/"
        tail = "" if index is None else f"{index:04d}"
        return f"{self.prefix}hookdue/{q(run_id)}/{tail}"
