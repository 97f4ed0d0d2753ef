"""The dashboard as an operator uses it, on SQLite and on etcd: `runner ui` against a store with
real runs, looked at in headless Chromium, and its JSON API next to the CLI's -o json."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.helpers import wait_for
from tests.ui.conftest import TOKEN, Dashboard, Scene, screenshot, start_ui

VOLATILE = {"heartbeat_at", "heartbeat_age", "expires_at"}  # a worker's, between two reads


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _post(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method="POST", headers=headers, data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _cli_json(scene: Scene, *args: str) -> Any:
    res = scene.cli.run(*args, "-o", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def test_api_returns_the_cli_json_shapes(scene: Scene, dashboard: Dashboard) -> None:
    api = dashboard.url + "/api"
    assert _get(f"{api}/runs") == _cli_json(scene, "get", "runs")
    for run_id in (scene.failed, scene.bumpy):
        assert _get(f"{api}/runs/{run_id}") == _cli_json(scene, "get", "run", run_id)
    assert _get(f"{api}/schedules") == _cli_json(scene, "cron", "list")
    assert _get(f"{api}/locks") == _cli_json(scene, "locks")
    assert _strip(_get(f"{api}/workers")) == _strip(_cli_json(scene, "workers"))
    assert [lock["name"] for lock in _get(f"{api}/locks")] == ["ticker-lock"]


def test_api_writes_need_the_token(scene: Scene, dashboard: Dashboard) -> None:
    url = f"{dashboard.url}/api/runs/{scene.failed}/retry"
    assert _post(url)[0] == 403
    assert _post(url, token="wrong")[0] == 403
    assert _get(f"{dashboard.url}/api/runs/{scene.failed}")["state"] == "failed"
    status, triggered = _post(f"{dashboard.url}/api/schedules/nightly/trigger", token=TOKEN)
    assert status == 200
    assert triggered["id"].startswith("nightly-")
    assert triggered["id"].endswith("-manual")
    done = lambda: scene.cli.get_run(triggered["id"])["state"] == "succeeded"  # noqa: E731
    wait_for(done, what="the triggered run to succeed on ui-worker")
    assert _post(f"{dashboard.url}/api/schedules/nightly/suspend", token=TOKEN)[1]["suspended"]
    assert _cli_json(scene, "cron", "list")[0]["suspended"] is True
    assert not _post(f"{dashboard.url}/api/schedules/nightly/resume", token=TOKEN)[1]["suspended"]
    read_only = start_ui(scene.cli)
    try:
        status, _ = _post(f"{read_only.url}/api/runs/{scene.failed}/retry", token=TOKEN)
        assert status in (404, 405)  # no write route at all without --allow-write
    finally:
        read_only.proc.terminate()
        read_only.proc.wait()


def _open(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_pages_show_runs_workers_schedules_and_locks(
    scene: Scene, dashboard: Dashboard, browser: webdriver.Chrome
) -> None:
    _open(browser, f"{dashboard.url}/runs")
    rows = {
        r.get_attribute("data-state")
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    }
    assert rows == {"failed", "succeeded", "running"}
    screenshot(browser, scene.store, "01-runs")
    _open(browser, f"{dashboard.url}/runs?state=failed")
    assert [
        a.text for a in browser.find_elements(By.CSS_SELECTOR, "#runs tbody td:first-child a")
    ] == [scene.failed]
    _open(browser, f"{dashboard.url}/workers")
    assert "ui-worker" in _text(browser, "#workers")
    assert "1/2" in _text(browser, "#workers")
    screenshot(browser, scene.store, "06-workers")
    _open(browser, f"{dashboard.url}/schedules")
    assert "0 2 * * *" in _text(browser, "#schedules")
    assert "-manual" in _text(browser, "#schedules")  # its last run, and last success
    screenshot(browser, scene.store, "07-schedules")
    _open(browser, f"{dashboard.url}/locks")
    assert f"{scene.running}/tick" in _text(browser, "#locks")
    screenshot(browser, scene.store, "08-locks")


def test_failed_run_links_to_its_task_log(
    scene: Scene, dashboard: Dashboard, browser: webdriver.Chrome
) -> None:
    _open(browser, f"{dashboard.url}/runs")
    browser.find_element(By.LINK_TEXT, scene.failed).click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "dag"))
    nodes = browser.find_elements(By.CSS_SELECTOR, "#dag .node")
    assert len(nodes) == 5  # prep, shard x3, boom
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dag .edges path")) == 6
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dag .node.s-failed")) == 1
    screenshot(browser, scene.store, "02-failed-run")
    browser.find_element(By.CSS_SELECTOR, "a.failed-task").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "log"))
    log = _text(browser, "#log")
    assert "step 3" in log
    assert "disk full" in log
    assert "exit 3" in _text(browser, "main")
    screenshot(browser, scene.store, "03-failed-log")


def test_retries_and_the_lost_attempt_on_the_gantt_chart(
    scene: Scene, dashboard: Dashboard, browser: webdriver.Chrome
) -> None:
    _open(browser, f"{dashboard.url}/runs/{scene.bumpy}")
    bars = [
        str(b.get_attribute("class"))
        for b in browser.find_elements(By.CSS_SELECTOR, "#gantt rect.bar")
    ]
    assert sorted(bars) == sorted(
        ["bar s-lost", "bar s-succeeded", "bar s-failed", "bar s-failed", "bar s-succeeded"]
    )
    hold = _text(browser, '#task-table tr[data-task="hold"]')
    assert "#1 lost" in hold
    assert "#2 succeeded" in hold
    browser.execute_script("document.getElementById('gantt').scrollIntoView()")
    screenshot(browser, scene.store, "04-retries-and-lost")


def test_running_log_grows_live_and_cancel_needs_the_token(
    scene: Scene, dashboard: Dashboard, browser: webdriver.Chrome
) -> None:
    _open(browser, f"{dashboard.url}/runs/{scene.running}/log?task=tick")
    assert browser.find_element(By.ID, "log").get_attribute("data-stream")

    def last_tick(driver: webdriver.Chrome) -> int:
        ticks = re.findall(r"tick (\d+)", _text(driver, "#log"))
        return int(ticks[-1]) if ticks else 0

    seen = WebDriverWait(browser, 30).until(last_tick)
    WebDriverWait(browser, 30).until(lambda d: last_tick(d) >= seen + 5)  # without a reload
    screenshot(browser, scene.store, "05-live-log")
    _open(browser, f"{dashboard.url}/runs/{scene.running}")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="cancel"]').click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "error"))
    assert "refused" in _text(browser, "#error")
    assert "token" in _text(browser, "#error")
    screenshot(browser, scene.store, "09-cancel-refused")
    assert scene.cli.get_run(scene.running)["state"] == "running"
    _open(browser, f"{dashboard.url}/login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-button").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "logout"))
    _open(browser, f"{dashboard.url}/runs/{scene.running}")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="cancel"]').click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "msg"))
    assert f"run {scene.running} cancelled" in _text(browser, "#msg")
    assert scene.cli.get_run(scene.running)["state"] == "cancelled"
    screenshot(browser, scene.store, "10-cancelled")
