"""Faults against a real etcd, with separate OS processes: the real CLI, real workers.

Workers die (kill -9), pause past their lease (SIGSTOP), etcd stops and restarts, a cluster
loses its leader, and etcd is not there at all. Each test counts executions and overlaps from a
ledger the tasks write (tests/integration/ledger.py), checks `runner get run -o json`, and
prints one line of figures (docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import etcd_harness
from tests.e2e.helpers import Cli, pid_alive, tasks_by_id, wait_for
from tests.integration import ledger

TTL = 1.0  # worker lease TTL (etcd's minimum); detection bound G6: TTL + 1.5 s
DETECTION_BOUND = TTL + 1.5
START_SLACK = 0.5  # a claimed attempt's process must start before the ledger sees it
LEDGER = Path(ledger.__file__).resolve()

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """The CLI on one etcd prefix in a scratch folder, with a ledger and worker processes."""

    cli: Cli
    cluster: etcd_harness.Cluster
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger_path(self) -> Path:
        return self.cli.cwd / "ledger.jsonl"

    @property
    def release(self) -> Path:
        return self.cli.cwd / "release"

    def workflow(
        self, tasks: dict[str, list[str]], *, depends: dict[str, str] | None = None
    ) -> str:
        """Write a workflow whose tasks run the ledger with the given extra arguments."""
        depends = depends or {}
        lines = ["apiVersion: runner/v1", "kind: Workflow", "metadata: {name: faults}", "spec:"]
        lines.append("  tasks:")
        for name, extra in tasks.items():
            argv = [sys.executable, str(LEDGER), str(self.ledger_path), *extra]
            lines.append(f"    - name: {name}")
            lines.append(f"      args: {json.dumps(argv)}")
            if name in depends:
                lines.append(f"      depends: [{depends[name]}]")
        path = self.cli.cwd / "faults.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path.name

    def apply_detached(self, workflow: str) -> str:
        res = self.cli.run("apply", workflow, "--detach")
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def worker(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        proc = self.cli.start(
            "worker",
            "--concurrency",
            str(concurrency),
            "--lease-ttl",
            str(TTL),
            "--drain-timeout",
            "1",
        )
        self.workers.append(proc)
        return proc

    def finish(self, run_id: str, timeout: float = 40) -> dict[str, Any]:
        """Follow the run to its end (no local workers); the run as `get run -o json` shows it."""
        res = self.cli.run(
            "apply",
            "--resume",
            run_id,
            "--workers",
            "0",
            "--timeout",
            f"{timeout}s",
            timeout=timeout + 20,
        )
        assert res.returncode == 0, (res.stdout, res.stderr, self.logs())
        return self.cli.get_run(run_id)

    def executions(self) -> list[ledger.Execution]:
        return ledger.executions(self.ledger_path)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.cli.cwd.glob("*.log")))

    def stale_rejections(self) -> int:
        """Results the workers tried to record and the store refused (LeaseLost at finish)."""
        return self.logs().count("not recorded")

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def harness_factory(
    tmp_path: Path, etcd_cluster_factory: Callable[[int], etcd_harness.Cluster]
) -> Iterator[Callable[[int], Harness]]:
    """A fresh etcd cluster of 1 or 3 members per test (the tests hurt it) and the CLI on it."""
    made: list[Harness] = []

    def make(size: int = 1) -> Harness:
        cluster = etcd_cluster_factory(size)
        url = f"{cluster.url}/t-{uuid.uuid4().hex[:8]}/"
        folder = tmp_path / f"h{len(made)}"
        folder.mkdir()
        harness = Harness(Cli(folder, store=url), cluster)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.stop_workers()


def owner(pid: int, candidates: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The worker process among `candidates` that `pid` descends from."""
    by_pid = {p.pid: p for p in candidates}
    current = pid
    for _ in range(8):
        if current in by_pid:
            return by_pid[current]
        try:
            current = int(Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            break
    raise AssertionError(f"pid {pid} descends from none of the workers")


def started(
    h: Harness, *, task: str | None = None, attempt: int | None = None
) -> list[ledger.Execution]:
    return [
        e
        for e in h.executions()
        if (task is None or e.task == task) and (attempt is None or e.attempt == attempt)
    ]


@dataclass
class Figures:
    """One line of figures per fault test (docs/RELIABILITY.md)."""

    name: str
    tasks: int = 0
    faults: int = 0
    lost: int = 0
    duplicate_results: int = 0
    re_executions: int = 0
    overlap: float = 0.0
    stale_rejected: int = 0
    detection: float | None = None

    @classmethod
    def of(cls, name: str, h: Harness, run: dict[str, Any], *, faults: int) -> Figures:
        execs = h.executions()
        tasks = run["tasks"]
        attempts = [a for t in tasks for a in t["attempts"]]
        succeeded = [sum(a["state"] == "succeeded" for a in t["attempts"]) for t in tasks]
        return cls(
            name=name,
            tasks=len(tasks),
            faults=faults,
            lost=sum(a["state"] == "lost" for a in attempts),
            duplicate_results=sum(max(0, n - 1) for n in succeeded),
            re_executions=len(execs) - len({e.task for e in execs}),
            overlap=ledger.max_overlap(execs),
            stale_rejected=h.stale_rejections(),
        )

    def line(self) -> str:
        detection = "-" if self.detection is None else f"{self.detection:.2f}s"
        return (
            f"figures {self.name}: tasks={self.tasks} faults={self.faults} lost={self.lost} "
            f"duplicate_results={self.duplicate_results} re_executions={self.re_executions} "
            f"overlap={self.overlap:.3f}s stale_writes_rejected={self.stale_rejected} "
            f"detection={detection} ttl={TTL:g}s"
        )

    def show(self, capsys: pytest.CaptureFixture[str]) -> None:
        with capsys.disabled():
            print(f"\n{self.line()}")


def assert_all_succeeded(run: dict[str, Any]) -> None:
    assert run["state"] == "succeeded", run
    for task in run["tasks"]:
        assert task["state"] == "succeeded", task
        assert [a["state"] for a in task["attempts"]].count("succeeded") == 1, task


# ---------------------------------------------------------------------- worker faults


@pytest.mark.slow
def test_worker_kill9_mid_task_other_worker_finishes_and_lost_attempt_is_recorded(
    harness_factory: Callable[[int], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness_factory(1)
    names = ["a", "b", "c"]
    run_id = h.apply_detached(h.workflow({n: ["--until-file", str(h.release)] for n in names}))
    first = h.worker(concurrency=1)
    wait_for(lambda: len(started(h)) == 1, what="the first worker to start a task")
    victim = started(h)[0]
    assert owner(victim.pid, [first]) is first
    second = h.worker(concurrency=len(names))
    wait_for(lambda: len(started(h)) == len(names), what="the second worker to take the rest")

    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait()
    # G6: the task is re-queued and claimed again by the other worker, within TTL + 1.5 s
    wait_for(
        lambda: bool(started(h, task=victim.task, attempt=2)),
        timeout=DETECTION_BOUND + START_SLACK + 5,
        what="the lost task to be claimed again",
    )
    detection = started(h, task=victim.task, attempt=2)[0].start - killed_at
    # no undead task: the killed worker's task process died with it
    wait_for(lambda: not pid_alive(victim.pid), timeout=5, what="the killed worker's task to die")
    assert owner(started(h, task=victim.task, attempt=2)[0].pid, [second]) is second

    h.release.touch()
    run = h.finish(run_id)
    assert_all_succeeded(run)
    attempts = tasks_by_id(run)[victim.task]["attempts"]
    assert [a["state"] for a in attempts] == ["lost", "succeeded"]
    assert attempts[0]["worker"] != attempts[1]["worker"]
    for name in set(names) - {victim.task}:
        assert len(tasks_by_id(run)[name]["attempts"]) == 1
    figures = Figures.of("kill9-worker", h, run, faults=1)
    figures.detection = detection
    figures.show(capsys)
    assert figures.lost == 1
    assert figures.re_executions == 1  # G4: one fault on a running attempt, one re-execution
    assert figures.duplicate_results == 0
    assert figures.overlap == 0.0  # the dead worker's task was gone before the new attempt
    assert detection <= DETECTION_BOUND + START_SLACK


@dataclass
class Paused:
    """What the SIGSTOP scenario saw."""

    figures: Figures
    stale: ledger.Execution
    taken_over: ledger.Execution
    stopped_at: float
    continued_at: float


def _pause_worker_past_its_lease(h: Harness) -> Paused:
    """Worker A runs attempt 1 (held until `release` exists) and is SIGSTOPped; A's reaper kills
    attempt 1 at A's self-fencing deadline, before A's lease expires; worker B then takes the
    task over and finishes it (attempt 2 runs 1 s). A gets SIGCONT: it must fence itself (or
    have its result refused by the fencing token) and record nothing."""
    argv = ["--hold-attempts", "1", "--until-file", str(h.release), "--seconds", "1"]
    run_id = h.apply_detached(h.workflow({"t": argv}))
    first = h.worker()
    wait_for(lambda: bool(started(h, attempt=1)), what="worker A to start attempt 1")
    second = h.worker()
    first.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: bool(started(h, attempt=2)), timeout=15, what="worker B to take over")
        assert owner(started(h, attempt=2)[0].pid, [second]) is second
        run_done = lambda: h.cli.get_run(run_id)["state"] == "succeeded"  # noqa: E731
        wait_for(run_done, timeout=15, what="worker B to finish the task")
        h.release.touch()
        stale_dead = lambda: not pid_alive(started(h, attempt=1)[0].pid)  # noqa: E731
        wait_for(stale_dead, timeout=5, what="attempt 1 to be killed while A is stopped")
    finally:
        first.send_signal(signal.SIGCONT)
    continued_at = time.monotonic()
    # A fenced itself (or had its result refused) and is still alive, serving as a new worker
    fenced = lambda: "lease deadline passed" in h.logs() or "not recorded" in h.logs()  # noqa: E731
    wait_for(fenced, timeout=5, what="worker A to fence itself")
    assert first.poll() is None
    h.stop_workers()
    run = h.cli.get_run(run_id)
    figures = Figures.of("sigstop-worker", h, run, faults=1)
    return Paused(
        figures=figures,
        stale=started(h, attempt=1)[0],
        taken_over=started(h, attempt=2)[0],
        stopped_at=stopped_at,
        continued_at=continued_at,
    )


@pytest.mark.slow
def test_worker_sigstop_past_its_lease_records_nothing_for_the_stale_attempt(
    harness_factory: Callable[[int], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness_factory(1)
    seen = _pause_worker_past_its_lease(h)
    seen.figures.show(capsys)
    run = h.cli.get_run("@latest")
    assert_all_succeeded(run)
    attempts = run["tasks"][0]["attempts"]
    # G2/G3: exactly one succeeded attempt, from worker B; A's attempt is lost, not succeeded
    assert [a["state"] for a in attempts] == ["lost", "succeeded"]
    assert attempts[0]["worker"] != attempts[1]["worker"]
    assert seen.figures.duplicate_results == 0
    assert seen.figures.re_executions == 1
    # the stale attempt was killed while A was stopped; A resumed and recorded nothing: it
    # fenced itself first or the store refused the stale token
    assert not seen.stale.ended
    assert not pid_alive(seen.stale.pid)
    fence_bound = TTL  # the heartbeat loop wakes every TTL/5 and sees its deadline has passed
    # B claimed only after A's lease expired on the server: TTL after A's last heartbeat
    assert seen.taken_over.start - seen.stopped_at >= TTL - 2 * TTL / 5
    # overlap is bounded by the pause: the stale process ran until A was resumed and fenced
    assert seen.figures.overlap <= seen.continued_at - seen.taken_over.start + fence_bound


@pytest.mark.slow
def test_worker_sigstop_overlap_is_bounded_by_the_fencing_margin(
    harness_factory: Callable[[int], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness_factory(1)
    seen = _pause_worker_past_its_lease(h)
    seen.figures.name = "sigstop-worker-margin"
    seen.figures.show(capsys)
    # docs/GUARANTEES.md, G5: a supervisor holding deadline = last answered heartbeat + TTL -
    # margin kills the task before the server can hand it to worker B, so the two never overlap
    assert seen.figures.overlap <= 2 * TTL / 5


# ---------------------------------------------------------------------- etcd faults


def _busy_workflow(h: Harness, *, seconds: float = 0.6) -> str:
    """Six tasks of `seconds` each: four in parallel, then two that join them."""
    tasks = {n: ["--seconds", str(seconds)] for n in ["a1", "a2", "a3", "a4", "b1", "b2"]}
    return h.workflow(tasks, depends={"b1": "a1, a2", "b2": "a3, a4, b1"})


def _check_completed(h: Harness, run: dict[str, Any], name: str, capsys: Any) -> Figures:
    figures = Figures.of(name, h, run, faults=1)
    figures.show(capsys)
    assert_all_succeeded(run)
    assert figures.duplicate_results == 0
    # G4: re-executions only for attempts a fault hit while they ran (two workers x 2 slots)
    assert figures.re_executions <= 4
    # G5: every worker was scheduled throughout, so attempts of one task never overlapped
    assert figures.overlap == 0.0
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sigstop", "kill-restart"])
def test_etcd_stopped_mid_run_the_run_completes(
    harness_factory: Callable[[int], Harness], capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    h = harness_factory(1)
    run_id = h.apply_detached(_busy_workflow(h))
    h.worker(concurrency=2)
    h.worker(concurrency=2)
    wait_for(lambda: len(started(h)) >= 3, what="tasks to be running")
    assert h.cluster.members[0].healthy()
    if fault == "sigstop":
        h.cluster.pause(0)
        outage_end = time.monotonic() + 2 * TTL  # past every lease and self-fencing deadline
        wait_for(lambda: time.monotonic() >= outage_end, what="the outage to last 2 TTLs")
        h.cluster.cont(0)
    else:
        h.cluster.kill(0)
        h.cluster.restart(0)
    h.cluster.wait_healthy()
    run = h.finish(run_id)
    _check_completed(h, run, f"etcd-{fault}", capsys)


@pytest.mark.slow
def test_etcd_cluster_leader_killed_mid_run_the_run_completes(
    harness_factory: Callable[[int], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness_factory(3)
    assert h.cli.env["RUNNER_STORE"].count(",") == 2  # all three endpoints
    run_id = h.apply_detached(_busy_workflow(h))
    h.worker(concurrency=2)
    h.worker(concurrency=2)
    wait_for(lambda: len(started(h)) >= 3, what="tasks to be running")
    old = h.cluster.leader()
    h.cluster.kill(old)
    new = h.cluster.leader()
    assert new != old
    run = h.finish(run_id)
    _check_completed(h, run, "etcd-leader-kill", capsys)


# ---------------------------------------------------------------------- etcd unreachable


@dataclass(frozen=True)
class Unreachable:
    port: int
    result: subprocess.CompletedProcess[str]
    took: float
    ran: bool


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Unreachable:
    """`runner apply` once against a loopback port nobody listens on."""
    folder = tmp_path_factory.mktemp("unreachable")
    port = etcd_harness.free_port()
    cli = Cli(folder, store=f"etcd://127.0.0.1:{port}/t-{uuid.uuid4().hex[:8]}/")
    (folder / "wf.yaml").write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec:\n  tasks:\n    - name: t\n      run: touch ran\n"
    )
    begin = time.monotonic()
    res = cli.run("apply", "wf.yaml", timeout=60)
    took = time.monotonic() - begin
    return Unreachable(port=port, result=res, took=took, ran=(folder / "ran").exists())


UNREACHABLE_BOUND = 8.0  # seconds; opening the store waits 3 s for an endpoint to answer


def test_apply_with_unreachable_etcd_exits_3_without_traceback_in_bounded_time(
    unreachable: Unreachable, capsys: pytest.CaptureFixture[str]
) -> None:
    res = unreachable.result
    with capsys.disabled():
        print(f"\nfigures etcd-unreachable: exit={res.returncode} took={unreachable.took:.2f}s")
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "etcd unreachable" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not unreachable.ran
    assert unreachable.took < UNREACHABLE_BOUND


def test_apply_with_unreachable_etcd_names_the_endpoint(unreachable: Unreachable) -> None:
    assert f"127.0.0.1:{unreachable.port}" in unreachable.result.stderr
