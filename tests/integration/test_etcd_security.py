"""TLS, auth and G9 against real etcd servers: mutual TLS, username/password, least privilege,
and secrets kept out of argv, logs, output and the store; runner opens no listening socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import config, errors
from runner.store import open_store
from runner.store.etcd import client as c
from tests import etcd_harness, etcd_tls
from tests.contract import plans
from tests.e2e.helpers import Cli, wait_for

PASSWORD = etcd_tls.RUNNER_PASSWORD
CREDS = {config.ENV_ETCD_USER: "runner", config.ENV_ETCD_PASSWORD: PASSWORD}
LEAKY = """\
apiVersion: runner/v1
kind: Workflow
metadata:
  name: leaky
spec:
  tasks:
    - name: env
      run: 'env; echo "pw=${RUNNER_ETCD_PASSWORD:-unset}"'
"""


def _need(*binaries: str) -> None:
    """Skip when a binary is missing, or fail when CI is set (like tests/conftest.py)."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        message = f"{', '.join(missing)} not on PATH (apt-get install etcd-server openssl)"
        if etcd_harness.env_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> etcd_tls.Pki:
    _need("openssl")
    return etcd_tls.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(
    pki: etcd_tls.Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[etcd_tls.TlsEtcd]:
    """An etcd that serves https only and requires a client certificate from the test CA."""
    _need("etcd")
    server = etcd_tls.TlsEtcd(tmp_path_factory.mktemp("etcd-tls"), pki)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[etcd_harness.Cluster]:
    """An etcd with auth enabled; user `runner` may read and write under AUTH_PREFIX only."""
    _need("etcd", "etcdctl")
    cluster = etcd_tls.start_auth_etcd(tmp_path_factory.mktemp("etcd-auth"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _prefix() -> str:
    return f"{etcd_tls.AUTH_PREFIX}{uuid.uuid4().hex[:8]}/"


def _clean(res: subprocess.CompletedProcess[str]) -> None:
    """Exit 3, one clear message, no traceback, no password anywhere."""
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("runner: ")
    assert "Traceback" not in res.stderr
    assert PASSWORD not in res.stdout + res.stderr


# ---------------------------------------------------------------------- TLS


def test_tls_store_round_trip_with_client_certificate(tls_etcd: etcd_tls.TlsEtcd) -> None:
    store = open_store(tls_etcd.url(f"/tls-{uuid.uuid4().hex[:8]}/"))
    try:
        worker = plans.worker(store)
        store.create_run(plans.linear(1), run_id="r1", now=plans.T0)
        lease = plans.claim_one(store, worker)
        store.finish(lease, plans.ok(k="v"), now=plans.T0 + 1)
        run = store.get_run("r1")
        assert run.state.value == "succeeded"
        assert run.tasks[0].outputs == {"k": "v"}
    finally:
        store.close()


def test_tls_cli_apply_succeeds(tls_etcd: etcd_tls.TlsEtcd, tmp_path: Path) -> None:
    cli = Cli(tmp_path, store=tls_etcd.url(f"/tls-{uuid.uuid4().hex[:8]}/"))
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert cli.get_run()["state"] == "succeeded"


@pytest.mark.parametrize("case", ["wrong-ca", "no-client-cert"])
def test_tls_bad_credentials_exit_3_naming_files(
    tls_etcd: etcd_tls.TlsEtcd, tmp_path: Path, case: str
) -> None:
    if case == "wrong-ca":
        url, named = tls_etcd.url("/tls/", ca=tls_etcd.pki.other_ca), tls_etcd.pki.other_ca
    else:
        url, named = tls_etcd.url("/tls/", client=False), tls_etcd.pki.ca
    res = Cli(tmp_path, store=url).run("get", "runs")
    _clean(res)
    assert "TLS handshake failed" in res.stderr
    assert tls_etcd.endpoint in res.stderr
    assert str(named) in res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr  # no gRPC log noise


def test_tls_missing_file_exit_3_naming_it(tls_etcd: etcd_tls.TlsEtcd, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    res = Cli(tmp_path, store=tls_etcd.url("/tls/", ca=missing)).run("get", "runs")
    _clean(res)
    assert f"etcd TLS file {missing}: No such file" in res.stderr


# ---------------------------------------------------------------------- auth


def _auth_cli(auth_etcd: etcd_harness.Cluster, tmp_path: Path, **env: str) -> Cli:
    cli = Cli(tmp_path, store=f"{auth_etcd.url}{_prefix()}")
    cli.env.update(env)
    return cli


def test_auth_password_from_environment(auth_etcd: etcd_harness.Cluster, tmp_path: Path) -> None:
    cli = _auth_cli(auth_etcd, tmp_path, **CREDS)
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert cli.get_run()["state"] == "succeeded"


def test_auth_password_from_file(auth_etcd: etcd_harness.Cluster, tmp_path: Path) -> None:
    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    cli = _auth_cli(
        auth_etcd, tmp_path, RUNNER_ETCD_USER="runner", RUNNER_ETCD_PASSWORD_FILE=str(secret)
    )
    res = cli.run("apply", cli.workflow("diamond.yaml"), "--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_auth_wrong_password_exit_3_without_echoing_it(
    auth_etcd: etcd_harness.Cluster, tmp_path: Path, debug: list[str]
) -> None:
    wrong = "Wr0ng-" + PASSWORD
    cli = _auth_cli(auth_etcd, tmp_path, RUNNER_ETCD_USER="runner", RUNNER_ETCD_PASSWORD=wrong)
    res = cli.run(*debug, "get", "runs")
    assert res.returncode == 3, res.stderr
    assert "refused the credentials of user 'runner'" in res.stderr
    assert auth_etcd.endpoints in res.stderr
    assert wrong not in res.stdout + res.stderr
    if not debug:
        _clean(res)


@pytest.mark.parametrize("command", [["worker"], ["scheduler"]])
def test_worker_and_scheduler_with_a_wrong_password_exit_3_rather_than_wait(
    auth_etcd: etcd_harness.Cluster, tmp_path: Path, command: list[str]
) -> None:
    # They wait for an etcd that is not up yet, but no wait cures refused credentials.
    wrong = "Wr0ng-" + PASSWORD
    cli = _auth_cli(auth_etcd, tmp_path, RUNNER_ETCD_USER="runner", RUNNER_ETCD_PASSWORD=wrong)
    res = cli.run(*command, timeout=30)
    assert res.returncode == 3, res.stderr
    assert "refused the credentials of user 'runner'" in res.stderr
    assert "waiting for the store" not in res.stderr
    assert wrong not in res.stdout + res.stderr


def test_auth_without_credentials_says_which_variables(
    auth_etcd: etcd_harness.Cluster, tmp_path: Path
) -> None:
    res = _auth_cli(auth_etcd, tmp_path).run("get", "runs")
    _clean(res)
    assert "requires authentication" in res.stderr
    assert config.ENV_ETCD_USER in res.stderr


def test_auth_least_privilege_user_refused_outside_its_prefix(
    auth_etcd: etcd_harness.Cluster,
) -> None:
    inside = open_store(f"{auth_etcd.url}{_prefix()}", etcd_user="runner", etcd_password=PASSWORD)
    try:
        inside.create_run(plans.linear(2), run_id="r1", now=plans.T0)
        assert plans.drain(inside, plans.worker(inside)) == ["t0", "t1"]
    finally:
        inside.close()
    outside = open_store(f"{auth_etcd.url}/other/", etcd_user="runner", etcd_password=PASSWORD)
    try:
        with pytest.raises(errors.StoreUnavailable, match="permission denied") as info:
            outside.create_run(plans.linear(1), run_id="r1", now=plans.T0)
        assert "refused access" in info.value.message
    finally:
        outside.close()


# ---------------------------------------------------------------------- G9


def test_settings_and_connection_repr_hide_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    for env in (CREDS, {config.ENV_ETCD_PASSWORD_FILE: str(secret)}):
        settings = config.from_env(env)
        assert settings.etcd_password == PASSWORD
        assert PASSWORD not in repr(settings)
    conn = c.Connection(endpoints=(("127.0.0.1", 1),), user="runner", password=PASSWORD)
    assert PASSWORD not in repr(conn)


def test_store_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(errors.ConfigError, match="RUNNER_ETCD_PASSWORD") as info:
        open_store(f"etcd://runner:{PASSWORD}@127.0.0.1:1/")
    assert PASSWORD not in info.value.message


def _listening_inodes() -> dict[str, str]:
    """inode -> local address of every listening TCP socket (IPv4 and IPv6)."""
    found: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[fields[9]] = fields[1]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since listed
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _assert_loopback_only(pid: int) -> None:
    """A listening socket of `pid`, if any, is bound to 127.0.0.1 or ::1."""
    loopback = ("0100007F", "00000000000000000000000001000000")
    listening = _listening_inodes()
    for inode in _socket_inodes(pid) & set(listening):
        address = listening[inode].split(":")[0]
        assert address in loopback, f"pid {pid} listens on {listening[inode]}"


def _whole_keyspace(auth_etcd: etcd_harness.Cluster) -> str:
    """Every key and value in etcd (not just runner's prefix), read as root with etcdctl."""
    root = f"root:{etcd_tls.ROOT_PASSWORD}"
    dump = etcd_tls.etcdctl(auth_etcd.endpoints, "get", "", "--prefix", user=root)
    assert f"{etcd_tls.AUTH_PREFIX}" in dump  # the dump did read runner's keys
    return dump


def test_worker_keeps_password_out_of_argv_logs_output_and_store(
    auth_etcd: etcd_harness.Cluster, tmp_path: Path
) -> None:
    cli = _auth_cli(auth_etcd, tmp_path, **CREDS)
    (tmp_path / "leaky.yaml").write_text(LEAKY)
    worker = cli.start("--debug", "worker", "--concurrency", "1", "--name", "sec")
    try:
        wait_for(lambda: b"serving" in (tmp_path / "proc-1.log").read_bytes(), what="worker")
        assert PASSWORD.encode() not in Path(f"/proc/{worker.pid}/cmdline").read_bytes()
        _assert_loopback_only(worker.pid)
        res = cli.run("--debug", "apply", "leaky.yaml", "--timeout", "20s")
        assert res.returncode == 0, res.stdout + res.stderr
        _assert_loopback_only(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    shown = cli.run("--debug", "get", "run", "@latest", "-o", "json")
    logs = cli.run("--debug", "logs", "@latest")
    assert "pw=unset" in logs.stdout  # the task ran without the store's password
    assert json.loads(shown.stdout)["state"] == "succeeded"
    for text in (res.stdout, res.stderr, shown.stdout, shown.stderr, logs.stdout, logs.stderr):
        assert PASSWORD not in text
    assert PASSWORD.encode() not in (tmp_path / "proc-1.log").read_bytes()
    assert PASSWORD not in _whole_keyspace(auth_etcd)


def test_worker_with_password_file_has_no_password_in_argv_or_environment(
    auth_etcd: etcd_harness.Cluster, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    cli = _auth_cli(
        auth_etcd, tmp_path, RUNNER_ETCD_USER="runner", RUNNER_ETCD_PASSWORD_FILE=str(secret)
    )
    worker = cli.start("worker", "--concurrency", "1")
    try:
        wait_for(lambda: b"serving" in (tmp_path / "proc-1.log").read_bytes(), what="worker")
        for name in ("cmdline", "environ"):
            assert PASSWORD.encode() not in Path(f"/proc/{worker.pid}/{name}").read_bytes()
        _assert_loopback_only(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
