"""The etcd harness starts real members, finds the leader and survives its own faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import etcd_harness


def test_etcd_server_is_healthy_on_loopback(etcd_server: etcd_harness.Cluster) -> None:
    assert etcd_server.url.startswith("etcd://127.0.0.1:")
    assert all(m.healthy() for m in etcd_server.members)
    assert etcd_server.leader() == 0
    assert "Version" in etcd_server.version


@pytest.mark.slow
def test_etcd_cluster_survives_leader_kill_and_restart(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster],
) -> None:
    cluster = etcd_cluster_factory(3)
    old = cluster.leader()
    cluster.kill(old)
    assert not cluster.members[old].running
    new = cluster.leader()
    assert new != old
    cluster.wait_healthy()
    cluster.restart(old)
    cluster.wait_healthy()
    assert all(m.running for m in cluster.members)


@pytest.mark.slow
def test_etcd_cluster_pause_and_continue_a_member(
    etcd_cluster_factory: Callable[[int], etcd_harness.Cluster],
) -> None:
    cluster = etcd_cluster_factory(3)
    follower = (cluster.leader() + 1) % 3
    cluster.pause(follower)
    assert not cluster.members[follower].healthy(timeout=0.2)
    cluster.cont(follower)
    cluster.wait_healthy(members=[cluster.members[follower]])
    assert "base dir" in cluster.report()
