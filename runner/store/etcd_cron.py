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

from runner import errors
from runner.models import CronEntry
from runner.store import etcd_client as c
from runner.store.base import entry_from_dict, entry_to_dict, merge_schedule
from runner.store.etcd_keys import Keys, dumps, loads, q

_TRIES = 100  # compare-and-set retries before giving up on contention


class EtcdCronMixin:
    """Schedule and election methods of `EtcdStore`, on its client and key prefix."""

    client: c.Client
    keys: Keys
    _cron_leases: dict[str, int] | None = None  # candidate -> its election lease
    _cron_lock = threading.Lock()

    def _schedule_key(self, name: str = "") -> str:
        return f"{self.keys.prefix}cron/schedule/{q(name)}"

    def _leader_key(self) -> str:
        return f"{self.keys.prefix}cron/leader"

    def _read_schedule(self, name: str) -> tuple[CronEntry | None, int]:
        item = self.client.get(self._schedule_key(name))
        if item is None:
            return None, 0
        return entry_from_dict(loads(item.value)), item.mod

    def _update(
        self, name: str, change: Callable[[CronEntry | None], CronEntry | None]
    ) -> CronEntry | None:
        """Compare-and-set the entry: `change` gets the current one and returns the new one,
        or None to write nothing. The written entry, or None."""
        key = self._schedule_key(name)
        for _ in range(_TRIES):
            found, mod = self._read_schedule(name)
            new = change(found)
            if new is None:
                return None
            ops = [c.put(key, dumps(entry_to_dict(new)))]
            if self.client.txn([c.mod_is(key, mod)], ops, f"schedule {name}").succeeded:
                return new
        raise errors.StoreError(f"schedule {name}: too much contention; try again")

    def put_schedule(self, entry: CronEntry, *, now: float) -> bool:
        """See Store.put_schedule."""
        return self._update(entry.name, lambda old: merge_schedule(old, entry, now=now)) is not None

    def get_schedule(self, name: str) -> CronEntry:
        """See Store.get_schedule."""
        found, _ = self._read_schedule(name)
        if found is None:
            raise errors.ScheduleNotFound(name)
        return found

    def list_schedules(self) -> list[CronEntry]:
        """See Store.list_schedules."""
        items = self.client.scan(self._schedule_key())
        return sorted((entry_from_dict(loads(i.value)) for i in items), key=lambda e: e.name)

    def delete_schedule(self, name: str) -> None:
        """See Store.delete_schedule."""
        key = self._schedule_key(name)
        # one txn: "absent" succeeds and writes nothing; otherwise the failure branch deletes
        result = self.client.txn(
            [c.mod_is(key, 0)], [], f"delete schedule {name}", failure=[c.delete(key)]
        )
        if result.succeeded:
            raise errors.ScheduleNotFound(name)

    def suspend_schedule(self, name: str, *, suspended: bool, now: float) -> CronEntry:
        """See Store.suspend_schedule."""

        def change(found: CronEntry | None) -> CronEntry:
            if found is None:
                raise errors.ScheduleNotFound(name)
            last = found.last_tick if suspended else max(found.last_tick, now)
            return dataclasses.replace(found, suspended=suspended, last_tick=last)

        new = self._update(name, change)
        assert new is not None
        return new

    def record_tick(
        self,
        name: str,
        *,
        tick: float,
        run_id: str | None = None,
        missed: int = 0,
        skipped: int = 0,
    ) -> bool:
        """See Store.record_tick."""

        def change(found: CronEntry | None) -> CronEntry | None:
            if found is None or tick <= found.last_tick:
                return None
            return dataclasses.replace(
                found,
                last_tick=tick,
                last_run_id=run_id or found.last_run_id,
                missed=found.missed + missed,
                skipped=found.skipped + skipped,
            )

        return self._update(name, change) is not None

    # ------------------------------------------------------------------ election

    def _cron_lease_map(self) -> dict[str, int]:
        with self._cron_lock:
            if self._cron_leases is None:
                self._cron_leases = {}
            return self._cron_leases

    def _live_lease(self, candidate: str, ttl: float) -> int:
        """The candidate's election lease, renewed; a new one when it expired."""
        leases = self._cron_lease_map()
        lease = leases.get(candidate)
        if lease is not None:
            try:
                alive = self.client.keepalive(lease) > 0
            except c.LeaseMissing:
                alive = False
            if alive:
                return lease
        lease = self.client.grant(ttl)
        leases[candidate] = lease
        return lease

    def campaign(self, candidate: str, *, now: float, ttl: float) -> bool:
        """See Store.campaign: create the leader key if absent on the candidate's lease."""
        lease = self._live_lease(candidate, ttl)
        key = self._leader_key()
        value = dumps({"candidate": candidate, "lease": lease})
        try:
            result = self.client.txn(
                [c.created_at(key, 0)], [c.put(key, value, lease)], "campaign", failure=[c.get(key)]
            )
        except c.LeaseMissing:  # expired between the renewal and the put
            self._cron_lease_map().pop(candidate, None)
            return False
        if result.succeeded:
            return True
        items = c.items_of(result.responses)
        return bool(items) and items[0].lease == lease

    def resign(self, candidate: str, *, now: float) -> None:
        """See Store.resign: revoking the lease deletes the leader key at once."""
        lease = self._cron_lease_map().pop(candidate, None)
        if lease is not None:
            self.client.revoke(lease)

    def leader(self, *, now: float) -> str | None:
        """See Store.leader."""
        item = self.client.get(self._leader_key())
        return None if item is None else str(loads(item.value)["candidate"])
