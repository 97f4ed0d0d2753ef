"""The Dockerfile, compose file and systemd units agree with the package and its promises."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import runner

REPO = Path(__file__).resolve().parents[2]


def test_dockerfile_version_argument_is_the_package_version() -> None:
    text = (REPO / "Dockerfile").read_text()
    versions = re.findall(r"^ARG RUNNER_VERSION=(\S+)$", text, flags=re.M)
    assert versions == [runner.__version__] * 2


def test_dockerfile_runs_runner_as_a_fixed_non_root_user() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    assert 'ENTRYPOINT ["runner"]' in lines
    assert "USER 10001:10001" in lines
    assert 'VOLUME ["/var/lib/runner"]' in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)


def test_compose_publishes_only_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") for p in published)
    assert sorted(n for n in services if n.startswith("etcd")) == ["etcd1", "etcd2", "etcd3"]
    workers = {n: s["command"] for n, s in services.items() if n.startswith("worker")}
    labels = {cmd[cmd.index("--labels") + 1] for cmd in workers.values()}
    weights = {cmd[cmd.index("--weight") + 1] for cmd in workers.values()}
    assert len(workers) == len(labels) == len(weights) == 3
    schedulers = [s for n, s in services.items() if n.startswith("scheduler")]
    assert len(schedulers) == 2
    assert all(v.endswith(":/workflows:ro") for s in schedulers for v in s["volumes"])


def test_compose_example_workflows_are_valid() -> None:
    from runner.cli import main

    files = sorted(str(p) for p in (REPO / "deploy" / "workflows").glob("*.yaml"))
    assert files
    assert main(["validate", *files]) == 0


def test_systemd_units_run_runner() -> None:
    for name in ("runner-worker.service", "runner-scheduler.service"):
        text = (REPO / "deploy" / "systemd" / name).read_text()
        assert re.search(r"^ExecStart=/opt/runner/bin/runner (worker|scheduler)", text, re.M)
        assert "KillSignal=SIGTERM" in text
