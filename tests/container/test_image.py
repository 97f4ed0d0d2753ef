"""The image: size, user, entrypoint, labels, `runner apply` in it, SIGTERM and zombies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import runner
from tests.container import podman as pm
from tests.container.conftest import REPO

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]

MAX_SIZE = 200_000_000

SLOW = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: slow}
spec:
  tasks:
    - name: wait
      run: echo waiting; sleep 120
"""

# Each orphan escapes the task's process group (setsid) and exits after the task has: it is
# re-parented to PID 1, runner, which must reap it. `check` waits (up to 10 s) until no orphan
# runs and no zombie child of PID 1 is left, and fails if one is.
ZOMBIES = """\
apiVersion: runner/v1
kind: Workflow
metadata: {name: zombies}
spec:
  tasks:
    - name: orphans
      run: for i in 1 2 3 4 5; do setsid sh -c 'exec sleep 0.3' & done; echo spawned
    - name: check
      depends: [orphans]
      args:
        - sh
        - -c
        - |
          stats() { for s in /proc/[0-9]*/stat; do cat "$s" 2>/dev/null; done; }
          i=0
          while [ $i -lt 100 ]; do
            left=$(stats | awk '($2 == "(sleep)" && $3 != "Z") || ($3 == "Z" && $4 == 1)' | wc -l)
            [ "$left" -eq 0 ] && exit 0
            sleep 0.1; i=$((i + 1))
          done
          echo "zombie children of PID 1: $(stats | awk '$3 == "Z" && $4 == 1' | wc -l)"
          exit 1
"""


def _inspect(podman: pm.Podman, image: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(podman.run("image", "inspect", image).stdout)
    return data[0]


def _workflows(tmp_path: Path, **files: str) -> Path:
    """A folder the container's user (uid 10001) can read."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    folder.chmod(0o755)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_image_is_small_non_root_with_runner_entrypoint(
    podman: pm.Podman, runner_image: str
) -> None:
    info = _inspect(podman, runner_image)
    size = int(str(info["Size"]))
    print(f"\nimage size {size / 1e6:.1f} MB")
    assert size < MAX_SIZE
    config = info["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["runner"]
    assert "/var/lib/runner" in config["Volumes"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == runner.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    healthcheck = info["Healthcheck"]
    assert isinstance(healthcheck, dict)
    assert healthcheck["Test"] == ["CMD", "runner", "health"]
    out = podman.run("run", "--rm", "--network", "none", runner_image, "--version").stdout
    assert out.strip() == f"runner {runner.__version__}"


def test_image_has_no_compiler_cache_or_test_dependencies(
    podman: pm.Podman, runner_image: str
) -> None:
    probe = (
        "id -u; for tool in gcc cc c++ make pip pip3 apt-get; do command -v $tool && echo "
        "found:$tool; done; ls /var/lib/apt/lists /root/.cache /var/lib/runner/.cache 2>&1; "
        "for mod in pytest mypy ruff hypothesis pip; do "
        '/opt/runner/bin/python -c "import $mod" 2>/dev/null && echo found:$mod; done; true'
    )
    out = podman.run(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", runner_image, "-c", probe
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "10001"
    found = [line for line in lines if line.startswith("found:")]
    # apt-get stays: it is part of the base image, like in Debian's own slim image.
    assert found == ["found:apt-get"], out


def test_image_runs_apply_to_success(podman: pm.Podman, runner_image: str) -> None:
    proc = podman.run(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{REPO / 'examples'}:/workflows:ro",
        runner_image,
        "apply",
        "diamond.yaml",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "succeeded" in proc.stdout.splitlines()[-1]


def test_image_stop_cancels_apply_with_143(
    podman: pm.Podman, runner_image: str, tmp_path: Path
) -> None:
    folder = _workflows(tmp_path, slow=SLOW)
    name = f"runner-test-apply-{time.monotonic_ns()}"
    podman.run(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "-v",
        f"{folder}:/workflows:ro",
        runner_image,
        "apply",
        "slow.yaml",
    )
    try:
        _wait_for_log(podman, name, "wait running")
        podman.run("stop", "-t", "30", name)
        state = podman.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout
        logs = podman.run("logs", name).stderr
    finally:
        podman.run("rm", "-f", "-v", name, check=False)
    assert state.strip() == "143", logs
    assert "cancelling run" in logs
    assert "terminated" in logs


def test_image_pid1_reaps_orphans(podman: pm.Podman, runner_image: str, tmp_path: Path) -> None:
    """No zombies pile up from tasks' children when runner is PID 1 (needs the subreaper
    and reaping of long-running runner processes)."""
    folder = _workflows(tmp_path, zombies=ZOMBIES)
    proc = podman.run(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{folder}:/workflows:ro",
        runner_image,
        "apply",
        "zombies.yaml",
        "--workers",
        "2",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _wait_for_log(podman: pm.Podman, name: str, text: str, *, within: float = 60.0) -> None:
    """Poll the container's output until it holds `text` (an event wait with a deadline)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        proc = podman.run("logs", name, check=False)
        if text in proc.stdout + proc.stderr:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}: no {text!r} within {within:g} s:\n{proc.stdout}{proc.stderr}")
