"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests import etcd_harness


@pytest.fixture(autouse=True)
def _clean_runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RUNNER_* variable of the caller's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RUNNER_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------------- etcd

_CLUSTERS: list[etcd_harness.Cluster] = []  # started in this session, for failure reports


def _need_etcd() -> str:
    """The etcd binary; skip the test when it is missing, or fail it when CI is set."""
    binary = etcd_harness.etcd_binary()
    if binary is None:
        message = "etcd is not on PATH (apt-get install etcd-server)"
        if etcd_harness.env_ci():
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[etcd_harness.Cluster]:
    """One etcd member for the whole session; `.url` is "etcd://127.0.0.1:PORT"."""
    binary = _need_etcd()
    cluster = etcd_harness.Cluster(tmp_path_factory.mktemp("etcd"), size=1, binary=binary)
    _CLUSTERS.append(cluster)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def etcd_cluster_factory(
    tmp_path: Path,
) -> Iterator[Callable[[int], etcd_harness.Cluster]]:
    """Start a fresh cluster of 1 or 3 members for one test (fault tests); stopped after it."""
    binary = _need_etcd()
    started: list[etcd_harness.Cluster] = []

    def start(size: int = 3) -> etcd_harness.Cluster:
        cluster = etcd_harness.Cluster(tmp_path / f"etcd{len(started)}", size=size, binary=binary)
        started.append(cluster)
        _CLUSTERS.append(cluster)
        return cluster.start()

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
            _CLUSTERS.remove(cluster)


def pytest_report_header() -> str:
    """Every run states which etcd it tested against."""
    return f"etcd: {etcd_harness.etcd_version()}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used etcd reports its version, data dirs and log tails."""
    report = yield
    uses_etcd = {"etcd_server", "etcd_cluster_factory"} & set(getattr(item, "fixturenames", ()))
    if report.failed and uses_etcd:
        for cluster in _CLUSTERS:
            report.sections.append(("etcd", cluster.report()))
    return report
