"""CPU and wall time per etcd request from runner's client (Python gRPC), one thread.

Usage: python benchmarks/etcd_client_bench.py etcd://127.0.0.1:23791 [--calls 500]
Prints, per request shape, the wall and the CPU seconds of this process per call: the floor
under what a worker process spends per round trip, whatever the data model. Keys go under a
fresh prefix, deleted afterwards. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from collections.abc import Callable

from runner.store.etcd import EtcdStore
from runner.store.etcd import client as c


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    prefix = f"/bench-client-{uuid.uuid4().hex[:8]}/"
    store = EtcdStore.from_url(f"{args.url.rstrip('/')}{prefix}")
    client = store.client
    value = "v" * 300  # about a small task record
    shapes: list[tuple[str, Callable[[int], object]]] = [
        ("get one key", lambda i: client.get(f"{prefix}x")),
        ("read 2 keys + a head of 8", lambda i: client.reads(
            [c.get(f"{prefix}a"), c.get(f"{prefix}b"), c.head(f"{prefix}q/", 8)], "r")),
        ("txn: 1 put", lambda i: client.txn([], [c.put(f"{prefix}k{i % 50}", value)], "t")),
        ("txn: 1 compare, 8 puts, delete, count", lambda i: client.txn(
            [c.mod_is(f"{prefix}zz", 0)],
            [*(c.put(f"{prefix}k{j}", value) for j in range(8)), c.delete(f"{prefix}d"),
             c.count(prefix)], "t")),
    ]  # fmt: skip
    try:
        print(f"{'request':40s} {'wall ms':>8s} {'CPU ms':>8s}  (per call, {args.calls} calls)")
        for name, call in shapes:
            wall, cpu = time.perf_counter(), _cpu()
            for i in range(args.calls):
                call(i)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
            print(f"{name:40s} {wall / args.calls * 1e3:8.3f} {cpu / args.calls * 1e3:8.3f}")
    finally:
        client.txn([], [c.delete_prefix(prefix)], "cleanup")
        store.close()


if __name__ == "__main__":
    main()
