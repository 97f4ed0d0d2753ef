"""A real store with real runs (one failed, one with retries and a lost worker, one running),
the dashboard serving it on a free loopback port, and headless Chromium to look at it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests import etcd_harness
from tests.e2e.helpers import REPO, Cli, wait_for

WORKFLOWS = Path(__file__).parent / "workflows"
ARTIFACTS = REPO / "tmp" / "artifacts" / "ui"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "s3cret-" + uuid.uuid4().hex


@dataclass
class Scene:
    """The runs a test looks at, and the processes that keep the running one going."""

    store: str  # "sqlite" | "etcd"
    cli: Cli
    failed: str = ""
    bumpy: str = ""
    running: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _copy(cli: Cli, name: str) -> str:
    shutil.copy(WORKFLOWS / name, cli.cwd / name)
    return name


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _lose_a_worker(scene: Scene) -> None:
    """bumpy: a worker dies (kill -9) while it runs `hold`; another finishes the run, with
    `flaky` needing three attempts."""
    cli = scene.cli
    scene.bumpy = cli.run("apply", _copy(cli, "bumpy.yaml"), "--detach").stdout.strip()
    doomed = cli.start("worker", "--concurrency", "1", "--lease-ttl", "1")
    try:
        wait_for(lambda: (cli.cwd / "started.txt").exists(), what="hold to start")
    finally:
        doomed.kill()
        doomed.wait()
    (cli.cwd / "release").touch()
    res = cli.run("apply", "--resume", scene.bumpy, "--workers", "2", "--lease-ttl", "1")
    assert res.returncode == 0, res.stderr


def _build(scene: Scene) -> None:
    cli = scene.cli
    res = cli.run("apply", _copy(cli, "nightly.yaml"))  # registers a schedule
    assert res.returncode == 0, res.stderr
    res = cli.run("apply", _copy(cli, "broken.yaml"), "--workers", "2")
    assert res.returncode == 1, res.stderr
    scene.failed = cli.get_run()["id"]
    _lose_a_worker(scene)
    scene.running = cli.run("apply", _copy(cli, "ticker.yaml"), "--detach").stdout.strip()
    scene.procs.append(cli.start("worker", "--concurrency", "2", "--name", "ui-worker"))
    wait_for(lambda: cli.get_run(scene.running)["state"] == "running", what="ticker to run")


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    cwd = tmp_path_factory.mktemp(f"ui-{request.param}")
    store = None
    if request.param == "etcd":
        server: Any = request.getfixturevalue("etcd_server")
        store = f"{server.url}/ui-{uuid.uuid4().hex[:8]}/"
    scene = Scene(request.param, Cli(cwd, store=store))
    try:
        _build(scene)
        yield scene
    finally:
        (cwd / "stop").touch()
        for proc in scene.procs + Cli.live:
            _stop(proc)
        Cli.live.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


@dataclass
class Dashboard:
    url: str
    proc: subprocess.Popen[bytes]


def start_ui(cli: Cli, *args: str, token: str | None = TOKEN) -> Dashboard:
    """`runner ui` on a free loopback port, once it answers."""
    port = free_port()
    env = {"RUNNER_UI_TOKEN": token} if token else {}
    proc = cli.start("ui", "--listen", f"127.0.0.1:{port}", *args, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(f"{url}/api/runs") or proc.poll() is not None, what="runner ui")
    assert proc.poll() is None, (cli.cwd / "proc-1.log").read_text()
    return Dashboard(url, proc)


@pytest.fixture(scope="module")
def dashboard(scene: Scene) -> Iterator[Dashboard]:
    """The scene's dashboard with writes allowed (and the token set)."""
    dash = start_ui(scene.cli, "--allow-write")
    try:
        yield dash
    finally:
        _stop(dash.proc)


def _need_browser() -> None:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        message = (
            f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        )
        if etcd_harness.env_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium with a fresh profile, driven by its chromedriver."""
    _need_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, store: str, name: str) -> Path:
    """Save the page as a test artifact: tmp/artifacts/ui/<store>/<name>.png."""
    folder = ARTIFACTS / store
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
