"""Start real etcd members from PATH on free loopback ports, and inject faults into them.

One member for the contract suite, three for failover tests. Exact PIDs are tracked, so a fault
hits only the member it names: kill (-9), stop (SIGSTOP), cont (SIGCONT), restart. Data dirs and
logs stay under the base dir given (pytest's tmp dirs keep them after a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ETCD = "etcd"
HEARTBEAT_MS = 50
ELECTION_MS = 500


class HarnessError(Exception):
    """etcd could not be started or did not become healthy in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def etcd_binary() -> str | None:
    """The etcd executable on PATH, or None."""
    return shutil.which(ETCD)


def etcd_version(binary: str | None = None) -> str:
    """The first line of `etcd --version` ("etcd Version: 3.4.23"), or "etcd not found"."""
    binary = binary or etcd_binary()
    if binary is None:
        return "etcd not found"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if out.stdout or out.stderr else "?"


@dataclass
class Member:
    """One etcd process: its name, ports, data dir and log file."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 0.5) -> bool:
        """GET /health answers {"health": "true"} (the member sees a leader)."""
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=timeout) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False


@dataclass
class Cluster:
    """1 or 3 etcd members on loopback, started by `start()` and stopped by `stop()`."""

    base_dir: Path
    size: int = 1
    binary: str = ETCD
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        for i in range(self.size):
            name = f"m{i}"
            (self.base_dir / name).mkdir(parents=True, exist_ok=True)
            self.members.append(
                Member(
                    name=name,
                    client_port=free_port(),
                    peer_port=free_port(),
                    data_dir=self.base_dir / name / "data",
                    log_path=self.base_dir / name / "etcd.log",
                )
            )

    # ------------------------------------------------------------------ addresses

    @property
    def endpoints(self) -> str:
        """host:port of every member, comma-separated."""
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    @property
    def url(self) -> str:
        """The store URL without a prefix: etcd://127.0.0.1:PORT[,...]."""
        return f"etcd://{self.endpoints}"

    @property
    def version(self) -> str:
        return etcd_version(self.binary)

    # ------------------------------------------------------------------ lifecycle

    def _argv(self, member: Member) -> list[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self.binary,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.client_url,
            "--advertise-client-urls",
            member.client_url,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
        ]

    def _spawn(self, member: Member) -> None:
        with member.log_path.open("ab") as log:
            member.proc = subprocess.Popen(
                self._argv(member), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        member.paused = False

    def start(self, timeout: float = 20.0) -> Cluster:
        """Start every member and wait until all are healthy. A port that another process took
        between `free_port` and etcd's bind (any outgoing connection may get it: the ports come
        from the ephemeral range) starts the cluster again on new ports, twice at most."""
        for attempt in range(3):
            for member in self.members:
                self._spawn(member)
            try:
                self.wait_healthy(timeout=timeout)
                return self
            except HarnessError:
                if attempt == 2 or not self._port_taken():
                    raise
                self.stop()
                self._new_ports()
        raise AssertionError("unreachable")

    def _port_taken(self) -> bool:
        return any(
            m.log_path.exists() and b"address already in use" in m.log_path.read_bytes()
            for m in self.members
        )

    def _new_ports(self) -> None:
        """Fresh ports and data for every member (the cluster's peer URLs change with them)."""
        for m in self.members:
            m.client_port, m.peer_port = free_port(), free_port()
            shutil.rmtree(m.data_dir, ignore_errors=True)
            m.log_path.write_bytes(b"")

    def wait_healthy(self, timeout: float = 20.0, members: list[Member] | None = None) -> None:
        """Wait until the given (default: all running, unpaused) members are healthy."""
        deadline = time.monotonic() + timeout
        todo = members or [m for m in self.members if m.running and not m.paused]
        pause = threading.Event()
        while True:
            dead = [m.name for m in todo if not m.running]
            if dead:
                raise HarnessError(f"etcd member(s) {dead} exited; see {self.base_dir}")
            if all(m.healthy() for m in todo):
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"etcd not healthy after {timeout}s; logs in {self.base_dir}")
            pause.wait(0.05)  # nothing to wait on but the members' health endpoint

    def stop(self) -> None:
        """SIGKILL every member and reap it: the data dirs are throwaway, and a graceful stop of
        a multi-member cluster spends seconds on leadership transfer."""
        for member in self.members:
            if member.running and member.proc is not None:
                member.proc.kill()
        for member in self.members:
            if member.proc is not None:
                member.proc.wait()

    # ------------------------------------------------------------------ faults

    def kill(self, index: int) -> None:
        """SIGKILL one member and reap it."""
        member = self.members[index]
        assert member.proc is not None
        member.proc.send_signal(signal.SIGKILL)
        member.proc.wait()

    def pause(self, index: int) -> None:
        """SIGSTOP one member (it keeps its sockets but answers nothing)."""
        member = self.members[index]
        assert member.proc is not None
        member.proc.send_signal(signal.SIGSTOP)
        member.paused = True

    def cont(self, index: int) -> None:
        """SIGCONT a paused member."""
        member = self.members[index]
        assert member.proc is not None
        member.proc.send_signal(signal.SIGCONT)
        member.paused = False

    def restart(self, index: int, timeout: float = 20.0) -> None:
        """Stop (if running) and start one member again on its data dir and ports."""
        member = self.members[index]
        if member.running and member.proc is not None:
            if member.paused:
                member.proc.send_signal(signal.SIGCONT)
            member.proc.terminate()
            member.proc.wait(timeout=10)
        self._spawn(member)
        self.wait_healthy(timeout=timeout, members=[member])

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the current leader, by asking every live member's /v3 maintenance status."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            for i, member in enumerate(self.members):
                if member.running and not member.paused and _is_leader(member):
                    return i
            if time.monotonic() > deadline:
                raise HarnessError(f"no etcd leader after {timeout}s; logs in {self.base_dir}")
            pause.wait(0.05)

    def report(self, tail: int = 20) -> str:
        """Version, data dirs and the last log lines of every member, for failure reports."""
        lines = [f"{self.version}; base dir {self.base_dir}"]
        for m in self.members:
            state = "running" if m.running else "down"
            lines.append(f"--- {m.name} pid={m.pid} {state} paused={m.paused} {m.client_url}")
            if m.log_path.exists():
                lines.extend(m.log_path.read_text(errors="replace").splitlines()[-tail:])
        return "\n".join(lines)


def _is_leader(member: Member) -> bool:
    """POST /v3/maintenance/status (grpc-gateway): leader == this member's id."""
    req = urllib.request.Request(
        f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=0.5) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    leader = body.get("leader")
    return leader is not None and leader == body.get("header", {}).get("member_id")


def env_ci() -> bool:
    """CI is set: a missing etcd binary fails tests instead of skipping them."""
    return bool(os.environ.get("CI"))
