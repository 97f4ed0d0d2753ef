"""The etcd store's schedules and scheduler election (see runner.store.base.Store).

Keys, under the store prefix:

- `cron/schedule/{name}`: the schedule entry (JSON), written by compare-and-set on its mod
  revision;
- `cron/leader`: `{"candidate", "lease"}`, attached to the leader's lease, created only if absent.

The election is etcd's own pattern: the leader key is created if absent on the candidate's
lease; the leader renews its lease on each `campaign`; when it dies or pauses past the TTL,
etcd deletes the key and the next candidate's create succeeds.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from runner import errors
from runner.models import CronEntry
from runner.store.base import entry_from_dict, entry_to_dict, merge_schedule
from runner.store.etcd import client as c
from runner.store.etcd import hooks
from runner.store.etcd.keys import Keys
from runner.store.etcd.records import LeaderRec, RunRec, dumps, loads

TRIES = 100  # compare-and-set retries before giving up on contention


@dataclass
class Election:
    """Per store object: each candidate's election lease."""

    leases: dict[str, int] = field(default_factory=dict)  # candidate -> its election lease
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lease_of(self, candidate: str) -> int:
        """The candidate's election lease (0: none)."""
        with self.lock:
            return self.leases.get(candidate, 0)


def read_schedule(client: c.Client, keys: Keys, name: str) -> tuple[CronEntry | None, int]:
    item = client.get(keys.schedule(name))
    if item is None:
        return None, 0
    return entry_from_dict(loads(item.value)), item.mod


def update(
    client: c.Client,
    keys: Keys,
    name: str,
    change: Callable[[CronEntry | None], CronEntry | None],
) -> CronEntry | None:
    """Compare-and-set the entry: `change` gets the current one and returns the new one,
    or None to write nothing. The written entry, or None."""
    key = keys.schedule(name)
    for _ in range(TRIES):
        found, mod = read_schedule(client, keys, name)
        new = change(found)
        if new is None:
            return None
        ops = [c.put(key, dumps(entry_to_dict(new)))]
        if client.txn([c.mod_is(key, mod)], ops, f"schedule {name}").succeeded:
            return new
    raise errors.StoreError(f"schedule {name}: too much contention; try again")


def put_schedule(client: c.Client, keys: Keys, entry: CronEntry, *, now: float) -> bool:
    """See Store.put_schedule."""
    merged = update(client, keys, entry.name, lambda old: merge_schedule(old, entry, now=now))
    return merged is not None


def get_schedule(client: c.Client, keys: Keys, name: str) -> CronEntry:
    """See Store.get_schedule."""
    found, _ = read_schedule(client, keys, name)
    if found is None:
        raise errors.ScheduleNotFound(name)
    return found


def list_schedules(client: c.Client, keys: Keys) -> list[CronEntry]:
    """See Store.list_schedules."""
    items = client.scan(keys.schedule())
    return sorted((entry_from_dict(loads(i.value)) for i in items), key=lambda e: e.name)


def delete_schedule(client: c.Client, keys: Keys, name: str) -> None:
    """See Store.delete_schedule."""
    key = keys.schedule(name)
    # one txn: "absent" succeeds and writes nothing; otherwise the failure branch deletes
    result = client.txn([c.mod_is(key, 0)], [], f"delete schedule {name}", failure=[c.delete(key)])
    if result.succeeded:
        raise errors.ScheduleNotFound(name)


def suspend_schedule(
    client: c.Client, keys: Keys, name: str, *, suspended: bool, now: float
) -> CronEntry:
    """See Store.suspend_schedule."""

    def change(found: CronEntry | None) -> CronEntry:
        if found is None:
            raise errors.ScheduleNotFound(name)
        last = found.last_tick if suspended else max(found.last_tick, now)
        return dataclasses.replace(found, suspended=suspended, last_tick=last)

    new = update(client, keys, name, change)
    assert new is not None
    return new


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """A tick to record (see Store.record_tick)."""

    tick: float
    run_id: str | None = None
    missed: int = 0
    skipped: int = 0


def record_tick(client: c.Client, keys: Keys, name: str, t: Tick) -> bool:
    """See Store.record_tick."""

    def change(found: CronEntry | None) -> CronEntry | None:
        if found is None or t.tick <= found.last_tick:
            return None
        return dataclasses.replace(
            found,
            last_tick=t.tick,
            last_run_id=t.run_id or found.last_run_id,
            missed=found.missed + t.missed,
            skipped=found.skipped + t.skipped,
        )

    if not t.missed:
        return update(client, keys, name, change) is not None
    return _record_missed(client, keys, name, t, change)


def _record_missed(
    client: c.Client,
    keys: Keys,
    name: str,
    t: Tick,
    change: Callable[[CronEntry | None], CronEntry | None],
) -> bool:
    """`record_tick` with missed ticks: in the same txn, the `missed_tick` deliveries of the
    schedule's latest run (the outbox, docs/HOOKS.md), compared on both records."""
    key = keys.schedule(name)
    for _ in range(TRIES):
        found, mod = read_schedule(client, keys, name)
        new = change(found)
        if new is None:
            return False
        compares, ops = [c.mod_is(key, mod)], [c.put(key, dumps(entry_to_dict(new)))]
        run_item = None if new.last_run_id is None else client.get(keys.run(new.last_run_id))
        if run_item is not None:
            run: RunRec = loads(run_item.value)
            recorded = hooks.missed_ops(keys, run, now=t.tick)
            if recorded:
                compares.append(c.mod_is(run_item.key, run_item.mod))
                ops += [c.put(run_item.key, dumps(run)), *recorded]
        if client.txn(compares, ops, f"schedule {name}").succeeded:
            return True
    raise errors.StoreError(f"schedule {name}: too much contention; try again")


# ---------------------------------------------------------------------- election


def live_lease(client: c.Client, election: Election, candidate: str, ttl: float) -> int:
    """The candidate's election lease, renewed; a new one when it expired."""
    lease = election.leases.get(candidate)
    if lease is not None:
        try:
            alive = client.keepalive(lease) > 0
        except c.LeaseMissing:
            alive = False
        if alive:
            return lease
    lease = client.grant(ttl)
    election.leases[candidate] = lease
    return lease


def campaign(
    client: c.Client, keys: Keys, election: Election, candidate: str, *, ttl: float
) -> bool:
    """See Store.campaign: create the leader key if absent on the candidate's lease."""
    lease = live_lease(client, election, candidate, ttl)
    key = keys.leader()
    value: LeaderRec = {"candidate": candidate, "lease": lease}
    try:
        result = client.txn(
            [c.created_at(key, 0)],
            [c.put(key, dumps(value), lease)],
            "campaign",
            failure=[c.get(key)],
        )
    except c.LeaseMissing:  # expired between the renewal and the put
        election.leases.pop(candidate, None)
        return False
    if result.succeeded:
        return True
    items = c.items_of(result.responses)
    return bool(items) and items[0].lease == lease


def resign(client: c.Client, election: Election, candidate: str) -> None:
    """See Store.resign: revoking the lease deletes the leader key at once."""
    lease = election.leases.pop(candidate, None)
    if lease is not None:
        client.revoke(lease)


def leader(client: c.Client, keys: Keys) -> str | None:
    """See Store.leader."""
    item = client.get(keys.leader())
    if item is None:
        return None
    value: LeaderRec = loads(item.value)
    return str(value["candidate"])
