"""EtcdStore.sweep against a real etcd: what it reads to find lost attempts."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from runner.store import Store
from runner.store.etcd import EtcdStore
from runner.store.etcd import workers as etcd_workers
from tests.contract import plans
from tests.contract.plans import T0, claim_one, states, worker


def test_sweep_does_not_take_a_task_claimed_between_its_reads_for_lost(
    etcd_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads `own/` (owners) and `held/` (what workers hold) at one revision: a
    task claimed in between must not look held without an owner."""
    url = f"{etcd_server.url}/runner-sweep-{uuid.uuid4().hex[:12]}/"
    sweeper, other = EtcdStore.from_url(url), EtcdStore.from_url(url)
    try:
        sweeper.create_run(plans.fan_out(2), run_id="r1", now=T0)
        w = worker(cast(Store, other))
        real_scan = sweeper.client.scan_at

        def scan_at(prefix: str, **kw: Any) -> Any:
            out = real_scan(prefix, **kw)
            if prefix == sweeper.keys.owns():
                claim_one(cast(Store, other), w)  # between the two reads
            return out

        suspected: list[str] = []
        real_lose = etcd_workers.lose

        def lose(ctx: Any, worker_id: str, held: Any, **kw: Any) -> Any:
            suspected.append(held.key)
            return real_lose(ctx, worker_id, held, **kw)

        monkeypatch.setattr(sweeper.client, "scan_at", scan_at)
        monkeypatch.setattr(etcd_workers, "lose", lose)
        sweeper.sweep(now=T0)
        assert suspected == []
        assert sorted(states(cast(Store, sweeper), "r1").values()) == ["ready", "running"]
    finally:
        sweeper.close()
        other.close()
