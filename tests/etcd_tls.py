"""Secured etcd members for tests: a throwaway PKI made with openssl, an etcd that requires TLS
client certificates, and an etcd with auth enabled and a least-privilege user.

Everything lives under the directory given (pytest's tmp dirs), listens on 127.0.0.1 only and
is stopped by `stop()`. Nothing here is a secret worth keeping: the CA is generated per session.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.etcd_harness import Cluster, HarnessError, free_port

AUTH_PREFIX = "/runner-auth/"  # the only key range the `runner` user may read and write
ROOT_PASSWORD = "root-Pw-7f3a"  # throwaway, for the test server only
RUNNER_PASSWORD = "s3cret-Pw-9b1c"  # searched for in output, argv and the store


def openssl_binary() -> str | None:
    """The openssl executable on PATH, or None."""
    return shutil.which("openssl")


def etcdctl_binary() -> str | None:
    """The etcdctl executable on PATH, or None."""
    return shutil.which("etcdctl")


@dataclass(frozen=True)
class Pki:
    """File paths of a CA, a server certificate for 127.0.0.1 and a client certificate, plus an
    unrelated CA (for the "wrong CA" case)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(base: Path, *args: str) -> None:
    res = subprocess.run(["openssl", *args], cwd=base, capture_output=True, text=True)
    if res.returncode != 0:
        raise HarnessError(f"openssl {' '.join(args)} failed: {res.stderr.strip()}")


def _make_ca(base: Path, name: str) -> None:
    _openssl(
        base,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=runner test {name}",
    )


def _make_leaf(base: Path, name: str, *, ca: str, ext: str) -> None:
    """A key and a certificate for `name`, signed by `ca`, with the given extensions."""
    (base / f"{name}.ext").write_text(ext)
    _openssl(
        base,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        base,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
    )


def make_pki(base: Path) -> Pki:
    """Generate the CA, server and client certificates into `base` (a few hundred ms)."""
    base.mkdir(parents=True, exist_ok=True)
    _make_ca(base, "ca")
    _make_ca(base, "other-ca")
    _make_leaf(
        base,
        "server",
        ca="ca",
        ext="subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _make_leaf(base, "client", ca="ca", ext="extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=base / "ca.pem",
        server_cert=base / "server.pem",
        server_key=base / "server.key",
        client_cert=base / "client.pem",
        client_key=base / "client.key",
        other_ca=base / "other-ca.pem",
    )


@dataclass
class TlsEtcd:
    """One etcd member serving clients over https only, requiring a client certificate signed
    by the PKI's CA (`--client-cert-auth`)."""

    base_dir: Path
    pki: Pki
    binary: str = "etcd"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, prefix: str, *, ca: Path | None = None, client: bool = True) -> str:
        """An etcds:// store URL; `ca` overrides the CA, `client=False` omits cert and key."""
        query = f"ca={ca or self.pki.ca}"
        if client:
            query += f"&cert={self.pki.client_cert}&key={self.pki.client_key}"
        return f"etcds://{self.endpoint}{prefix}?{query}"

    def _argv(self) -> list[str]:
        client = f"https://{self.endpoint}"
        peer = f"http://127.0.0.1:{free_port()}"
        return [
            self.binary,
            "--name",
            "tls",
            "--data-dir",
            str(self.base_dir / "data"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"tls={peer}",
            "--cert-file",
            str(self.pki.server_cert),
            "--key-file",
            str(self.pki.server_key),
            "--client-cert-auth",
            "--trusted-ca-file",
            str(self.pki.ca),
        ]

    def start(self, timeout: float = 20.0) -> TlsEtcd:
        """Start the member and wait until /health answers over mutual TLS."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with (self.base_dir / "etcd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline, pause = time.monotonic() + timeout, threading.Event()
        while not self._healthy():
            if self.proc.poll() is not None:
                raise HarnessError(f"TLS etcd exited; see {self.base_dir / 'etcd.log'}")
            if time.monotonic() > deadline:
                raise HarnessError(f"TLS etcd not healthy after {timeout}s; see {self.base_dir}")
            pause.wait(0.05)  # nothing to wait on but the health endpoint
        return self

    def _healthy(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        try:
            url = f"https://{self.endpoint}/health"
            with urllib.request.urlopen(url, timeout=0.5, context=ctx) as resp:
                return b'"true"' in resp.read()
        except OSError:
            return False

    def stop(self) -> None:
        """Terminate the member (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def etcdctl(endpoint: str, *args: str, user: str | None = None) -> str:
    """Run etcdctl (v3 API) against `endpoint`; its stdout. The password goes in `--user`
    here, which is fine for the throwaway test server (runner itself never uses argv)."""
    argv = ["etcdctl", f"--endpoints={endpoint}", *([f"--user={user}"] if user else []), *args]
    res = subprocess.run(
        argv, capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    )
    if res.returncode != 0:
        raise HarnessError(f"etcdctl {args[0]} failed: {res.stderr.strip()}")
    return res.stdout


def start_auth_etcd(base_dir: Path, binary: str = "etcd") -> Cluster:
    """One plain-http member with auth enabled: `root` and a user `runner` whose role grants
    readwrite on AUTH_PREFIX only."""
    cluster = Cluster(base_dir, size=1, binary=binary).start()
    ep = cluster.endpoints
    try:
        etcdctl(ep, "user", "add", f"root:{ROOT_PASSWORD}")
        etcdctl(ep, "user", "add", f"runner:{RUNNER_PASSWORD}")
        etcdctl(ep, "role", "add", "runner-rw")
        etcdctl(
            ep, "role", "grant-permission", "--prefix=true", "runner-rw", "readwrite", AUTH_PREFIX
        )
        etcdctl(ep, "user", "grant-role", "runner", "runner-rw")
        etcdctl(ep, "auth", "enable")
    except HarnessError:
        cluster.stop()
        raise
    return cluster
