"""Run the standard workloads (docs/BENCHMARKS.md: W1-W6, CI, C) and print a table.

    python benchmarks/workloads.py [--store sqlite|etcd://HOST:PORT] [--repeat 3] [--write]
    python benchmarks/workloads.py --only W1 --metrics-scrape 1   # with metrics on

`--write` replaces the workloads section of docs/PERFORMANCE.md with the table and the command.
The workloads themselves are `runner.benchrun` (what `runner bench` runs on a user's store); this
script adds each store's own ceiling (C) and the docs. Each figure is the median of --repeat runs
with min–max; W4 is compared with xargs measured in the same run. Not a test: nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner import bench, benchrun
from runner.metrics import Metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- workloads:begin -->", "<!-- workloads:end -->"


def _ceiling_sqlite(folder: Path, repeat: int, w1: float | None) -> benchrun.Row:
    """C: write transactions per second on one SQLite file (WAL, synchronous=NORMAL); W1 as
    a share of it (a task costs one write transaction: its finish claims the next task)."""
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
    title = "C SQLite write txn/s, 1 process"
    rate = statistics.median(rates)
    share = "-" if w1 is None else f"W1 = {w1 / rate:.1%} of C ÷ 1 txn/task"
    return benchrun.Row("C", title, bench.summary(rates) + " txn/s", share, "-")


def _cas_child(url: str, seconds: float, start: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One client process: compare-and-set one key in a loop (compare its mod revision, put),
    through runner's etcd client; puts its count of committed transactions."""
    from runner.store.etcd import EtcdStore
    from runner.store.etcd import client as c  # the client runner itself uses

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


def _ceiling_etcd(base: str, repeat: int, w1: float | None) -> benchrun.Row:
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
    title = "C etcd CAS txn/s, 1 · 4 · 8 processes"
    return benchrun.Row("C", title, " · ".join(cells) + " txn/s", share, "-")


@contextlib.contextmanager
def _metrics_on(every: float) -> Iterator[None]:
    """Metrics on, as `runner serve --metrics-addr` has them, for in-process workloads: the
    stores the workloads open (the worker's included) count their operations, and while each
    workload runs a `/metrics` listener with the cluster series of its store is scraped over
    HTTP every `every` seconds (Prometheus's default is 15)."""
    metrics, open_url, run_workload = Metrics(), bench.open_url, bench.run_workload

    def instrumented(url: str) -> Any:
        return metrics.instrument(open_url(url))

    def scraped(url: str, *args: Any, **kwargs: Any) -> bench.Result:
        reader = open_url(url)
        collector = Metrics()
        collector.add_cluster(reader)
        server, stop = collector.serve("127.0.0.1:0"), threading.Event()

        def scrape() -> None:
            while not stop.wait(every):
                with urllib.request.urlopen(server.url, timeout=30) as reply:
                    reply.read()

        thread = threading.Thread(target=scrape, daemon=True)
        thread.start()
        try:
            return run_workload(url, *args, **kwargs)
        finally:
            stop.set()
            thread.join()
            server.close()
            reader.close()

    bench.open_url, bench.run_workload = instrumented, scraped  # type: ignore[assignment]
    try:
        yield
    finally:
        bench.open_url, bench.run_workload = open_url, run_workload  # type: ignore[assignment]


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
    ap.add_argument("--prefetch", type=int, default=None, help="fixed worker prefetch")
    ap.add_argument(
        "--only",
        default="W1,W2,W3,W4,W5,CI,C",
        help="comma-separated workloads (default: all but W6)",
    )
    ap.add_argument(
        "--metrics-scrape", type=float, metavar="SECONDS",
        help="metrics on (in-process workers only): store operations counted, /metrics scraped "
        "every SECONDS during each workload",
    )  # fmt: skip
    args = ap.parse_args()
    if args.metrics_scrape is not None and args.processes:
        ap.error("--metrics-scrape measures in-process workers: leave out --processes")
    with _metrics_on(args.metrics_scrape) if args.metrics_scrape else contextlib.nullcontext():
        return _measure(args)


def _measure(args: argparse.Namespace) -> int:
    only = {w.strip().upper() for w in args.only.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        setup = benchrun.Setup(
            store=args.store,
            folder=folder,
            repeat=args.repeat,
            processes=args.processes,
            prefetch=args.prefetch,
        )
        workloads = tuple(w for w in benchrun.WORKLOADS if w in only)
        rows = benchrun.measure(setup, workloads, w5_100k=not args.skip_w5_100k)
        w1 = next((r.figures["tasks_per_s"] for r in rows if r.workload == "W1"), None)
        if "C" in only and args.store == "sqlite":
            rows.append(_ceiling_sqlite(folder, args.repeat, w1))
        elif "C" in only and args.store.startswith("etcd"):
            rows.append(_ceiling_etcd(args.store, args.repeat, w1))
    table = _table(rows, args)
    print(table)
    if args.write:
        _write(table)
    return 0


def _table(rows: list[benchrun.Row], args: argparse.Namespace) -> str:
    cmd = "python benchmarks/workloads.py " + " ".join(sys.argv[1:])
    head = (
        f"Command: `{cmd.strip()}` · store `{args.store}` · 4 worker slots "
        f"({'in one process' if not args.processes else f'{args.processes} processes'}, "
        f"prefetch {args.prefetch}) · "
        f"{platform.python_version()} · {time.strftime('%Y-%m-%d')}\n\n"
    )
    return head + benchrun.table(rows)


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
