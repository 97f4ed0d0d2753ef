"""Time the dashboard's run page for a 1,000-task run on SQLite, warm (a script, not a test).

    .venv/bin/python benchmarks/ui_bench.py [--tasks 1000] [--requests 20]

Stores a run of a generated workflow (benchmarks/plan_bench.py's shape: chains and fan-ins),
runs most of its tasks through a registered worker (so the page has attempts, a Gantt chart
and outputs), serves `runner ui` on a free loopback port in this process, and fetches
/runs/ID a few times to warm up, then --requests times. Prints the median, p95 and max wall
time of a whole request. Target (docs/UI.md): under 500 ms for 1,000 tasks.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.plan_bench import generate
from runner import engine, workflow
from runner.models import Outcome, WorkerInfo
from runner.store import open_store
from runner.ui import Server, UiConfig


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _populate(url: str, file: Path, tasks: int) -> str:
    store = open_store(url)
    try:
        now = time.time()
        run = engine.submit(store, workflow.load_plan(file), now=now)
        store.register_worker(WorkerInfo(id="bench-1", name="bench"), now=now, ttl=3600)
        done = 0
        while done < tasks * 0.9:
            leases = store.claim("bench-1", now=time.time(), limit=50)
            if not leases:
                break
            for lease in leases:
                outcome = Outcome(succeeded=True, exit_code=0, outputs={"n": str(done)})
                store.finish(lease, outcome, now=time.time())
                done += 1
        return run.id
    finally:
        store.close()


def _fetch(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "bench.yaml"
        file.write_text(generate(args.tasks))
        url = f"sqlite:///{tmp}/state.db"
        run_id = _populate(url, file, args.tasks)
        store = open_store(url)
        port = _port()
        server = Server(store, UiConfig(workflows=(file,)), host="127.0.0.1", port=port)
        server.start()
        try:
            page = f"http://127.0.0.1:{port}/runs/{run_id}"
            while True:
                try:
                    _fetch(page)
                    break
                except OSError:
                    time.sleep(0.05)  # the server is starting
            for _ in range(3):
                _fetch(page)
            times = sorted(_fetch(page) for _ in range(args.requests))
        finally:
            server.stop()
            store.close()
    p95 = times[max(0, int(len(times) * 0.95) - 1)]
    print(f"run page, {args.tasks} tasks, {args.requests} warm requests (SQLite):")
    print(
        f"  median {statistics.median(times) * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms  "
        f"max {times[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
