"""Run the standard workloads (../shared/BENCHMARKS.md: W1-W5, C) and print a table.

    python benchmarks/workloads.py [--store sqlite|etcd://HOST:PORT] [--repeat 3] [--write]

`--write` replaces the workloads section of docs/PERFORMANCE.md with the table and the command.
Each figure is the median of --repeat runs with min–max; W4 is compared with xargs measured in
the same run. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from runner import bench
from runner.models import Kind, Plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- workloads:begin -->", "<!-- workloads:end -->"


def _fresh_url(base: str, folder: Path) -> str:
    if base == "sqlite":
        return f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
    return f"{base.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}/"


def _repeat(n: int, fn: Callable[[], tuple[float, float]]) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu = fn()
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


SERVE = {"processes": 0, "prefetch": 0}  # set from the command line in main()


def _workload(base: str, folder: Path, plan: Plan) -> bench.Result:
    return bench.run_workload(_fresh_url(base, folder), plan, slots=4, log_dir=str(folder), **SERVE)


def _w_rate(base: str, folder: Path, plan: Plan, repeat: int) -> list[str]:
    n = len(plan.tasks)

    def once() -> tuple[float, float]:
        r = _workload(base, folder, plan)
        assert r.run.state.value == "succeeded", r.run.state
        return r.wall, r.cpu

    walls, cpus = _repeat(repeat, once)
    rates = [n / w for w in walls]
    cpu_ms = statistics.median(cpus) / n * 1000
    return [bench.summary(rates) + " tasks/s", bench.summary(walls) + " s", f"{cpu_ms:.2f}"]


def _w2(base: str, folder: Path, repeat: int) -> list[str]:
    means, p50s, p95s, cpus = [], [], [], []
    for _ in range(repeat):
        r = _workload(base, folder, bench.chain(200))
        hs = sorted(h * 1000 for h in bench.handoffs(r.run))
        means.append(statistics.mean(hs))
        p50s.append(statistics.median(hs))
        p95s.append(hs[int(len(hs) * 0.95) - 1])
        cpus.append(r.cpu)
    return [
        f"mean {bench.summary(means)} · p50 {bench.summary(p50s)} · p95 {bench.summary(p95s)} ms",
        "-",
        f"{statistics.median(cpus) / 200 * 1000:.2f}",
    ]


def _xargs() -> float:
    t0 = time.perf_counter()
    subprocess.run("seq 1000 | xargs -P4 -n1 true", shell=True, check=True)
    return time.perf_counter() - t0


def _w4(base: str, folder: Path, repeat: int) -> list[str]:
    """W4, each run right after an xargs run (the reference), so each ratio compares two
    runs seconds apart on this shared machine."""
    plan = bench.independent(1000, Kind.RUN)
    walls, cpus, refs = [], [], []
    for _ in range(repeat):
        refs.append(_xargs())
        r = _workload(base, folder, plan)
        assert r.run.state.value == "succeeded", r.run.state
        walls.append(r.wall)
        cpus.append(r.cpu)
    ratios = [w / x for w, x in zip(walls, refs, strict=True)]
    return [
        bench.summary([1000 / w for w in walls]) + " tasks/s",
        f"{bench.summary(walls)} s (xargs -P4: {bench.summary(refs)} s; "
        f"ratio {bench.summary(ratios)}×)",
        f"{statistics.median(cpus) / 1000 * 1000:.2f}",
    ]


def _w5_child(url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(bench.submit_only(url, bench.wide_dag(n)))


def _w5(base: str, folder: Path, n: int, repeat: int) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    secs, rss = [], []
    for _ in range(repeat):
        q = ctx.Queue()
        p = ctx.Process(target=_w5_child, args=(_fresh_url(base, folder), n, q))
        p.start()
        s, r = q.get()
        p.join()
        secs.append(s)
        rss.append(r)
    return [bench.summary(secs) + " s", f"peak RSS {statistics.median(rss):.0f} MiB", "-"]


def _ceiling_sqlite(folder: Path, repeat: int) -> list[str]:
    """C: write transactions per second on one SQLite file (WAL, synchronous=NORMAL)."""
    rates = []
    for _ in range(repeat):
        con = sqlite3.connect(folder / f"c-{uuid.uuid4().hex}.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        t0, n = time.perf_counter(), 5000
        for i in range(n):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t VALUES (?, ?)", (i, "x"))
            con.execute("COMMIT")
        rates.append(n / (time.perf_counter() - t0))
        con.close()
    return [bench.summary(rates) + " txn/s", "-", "-"]


def _cas_child(url: str, seconds: float, start: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One client process: compare-and-set one key in a loop (compare its mod revision, put),
    through runner's etcd client; puts its count of committed transactions."""
    from runner.store import etcd_client as c  # the client runner itself uses
    from runner.store.etcd import EtcdStore

    store = EtcdStore.from_url(url)
    client, key = store.client, f"{store.keys.prefix}cas/{uuid.uuid4().hex}"
    mod, n = 0, 0
    while time.time() < start:
        time.sleep(0.001)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        res = client.txn([c.mod_is(key, mod)], [c.put(key, str(n))], "cas")
        assert res.succeeded
        mod, n = res.revision, n + 1
    store.close()
    out.put(n)


def _ceiling_etcd(base: str, repeat: int, w1: float | None) -> list[str]:
    """C: compare-and-set txn/s from 1, 4 and 8 client processes (each on its own key)."""
    ctx = multiprocessing.get_context("spawn")
    cells, rate4 = [], 0.0
    for procs in (1, 4, 8):
        rates = []
        for _ in range(repeat):
            q, seconds, start = ctx.Queue(), 2.0, time.time() + 1.5
            url = f"{base.rstrip('/')}/bench-c-{uuid.uuid4().hex[:8]}/"
            ps = [
                ctx.Process(target=_cas_child, args=(url, seconds, start, q)) for _ in range(procs)
            ]
            for p in ps:
                p.start()
            rates.append(sum(q.get() for _ in ps) / seconds)
            for p in ps:
                p.join()
        cells.append(f"{procs}: {bench.summary(rates)}")
        rate4 = statistics.median(rates) if procs == 4 else rate4
    share = "-" if w1 is None or not rate4 else f"W1 = {w1 / (rate4 / 2):.0%} of C(4) ÷ 2 txn/task"
    return [" · ".join(cells) + " txn/s", share, "-"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", default="sqlite", help="sqlite, or etcd://HOST:PORT")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update docs/PERFORMANCE.md")
    ap.add_argument("--skip-w5-100k", action="store_true")
    ap.add_argument(
        "--processes", type=int, default=0,
        help="serve with N `runner worker` processes sharing the 4 slots (default: in-process)",
    )  # fmt: skip
    ap.add_argument("--prefetch", type=int, default=0, help="worker claim prefetch")
    ap.add_argument(
        "--only", default="W1,W2,W3,W4,W5,C", help="comma-separated workloads (default: all)"
    )
    args = ap.parse_args()
    only = {w.strip().upper() for w in args.only.split(",")}
    SERVE.update(processes=args.processes, prefetch=args.prefetch)
    rows: list[tuple[str, list[str]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        b, r = args.store, args.repeat
        w1: float | None = None
        if "W1" in only:
            rows.append(
                ("W1 2,000 no-op call tasks", _w_rate(b, folder, bench.independent(2000), r))
            )
            w1 = float(rows[-1][1][0].split()[0])
        if "W2" in only:
            rows.append(("W2 chain of 200, hand-off", _w2(b, folder, r)))
        if "W3" in only:
            rows.append(("W3 1 → 500 → 1", _w_rate(b, folder, bench.fan(500), r)))
        if "W4" in only:
            rows.append(("W4 1,000 × `true`", _w4(b, folder, r)))
        if "W5" in only:
            rows.append(("W5 submit 10,000-task DAG", _w5(b, folder, 10_000, r)))
            if not args.skip_w5_100k:
                rows.append(("W5 submit 100,000-task DAG", _w5(b, folder, 100_000, 1)))
        if "C" in only and b == "sqlite":
            rows.append(("C SQLite write txn/s, 1 process", _ceiling_sqlite(folder, r)))
        elif "C" in only and b.startswith("etcd"):
            rows.append(("C etcd CAS txn/s, 1 · 4 · 8 processes", _ceiling_etcd(b, r, w1)))
    table = _table(rows, args)
    print(table)
    if args.write:
        _write(table)
    return 0


def _table(rows: list[tuple[str, list[str]]], args: argparse.Namespace) -> str:
    cmd = "python benchmarks/workloads.py " + " ".join(sys.argv[1:])
    head = (
        f"Command: `{cmd.strip()}` · store `{args.store}` · 4 worker slots "
        f"({'in one process' if not args.processes else f'{args.processes} processes'}, "
        f"prefetch {args.prefetch}) · "
        f"{platform.python_version()} · {time.strftime('%Y-%m-%d')}\n\n"
        "| workload | rate / latency | wall | CPU ms per task |\n|---|---|---|---|\n"
    )
    return head + "\n".join(f"| {name} | {' | '.join(cells)} |" for name, cells in rows)


def _write(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Standard workloads\n\n" + section + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
