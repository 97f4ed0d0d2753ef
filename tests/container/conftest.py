"""Fixtures of the container tests: podman with the test's own configuration, and the images.

Marked `container` (deselect with -m "not container"). A missing podman, runc or debootstrap
skips them, or fails them when CI is set (`.ci/run` installs them).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests import etcd_harness
from tests.container import podman as pm

REPO = Path(__file__).resolve().parents[2]
RUNNER_IMAGE = "localhost/runner:test"
TOOLS = ("podman", "runc", "debootstrap")


@pytest.fixture(scope="session")
def podman() -> pm.Podman:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not on PATH (apt-get install podman runc debootstrap)"
        if etcd_harness.env_ci():
            pytest.fail(message)
        pytest.skip(message)
    return pm.Podman(pm.cache_dir())


@pytest.fixture(scope="session")
def runner_image(podman: pm.Podman) -> str:
    """The repository's Dockerfile built on the locally made debian:bookworm-slim."""
    started = time.monotonic()
    podman.ensure_base_image()
    based = time.monotonic()
    podman.build(REPO, RUNNER_IMAGE, build_args=["REVISION=test"])
    built = time.monotonic()
    # Earlier builds' intermediate images are the layer cache; those a day old are stale.
    podman.run("image", "prune", "-f", "--filter", "until=24h")
    print(f"\nbase image {based - started:.1f} s, runner image build {built - based:.1f} s")
    return RUNNER_IMAGE


@pytest.fixture(scope="session")
def etcd_image(podman: pm.Podman, runner_image: str) -> str:
    podman.build(Path(__file__).parent, pm.ETCD_IMAGE, file="etcd.Dockerfile")
    return pm.ETCD_IMAGE
