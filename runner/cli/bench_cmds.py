"""`runner bench`: the standard workloads (docs/BENCHMARKS.md: W1-W6, CI) on this store."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from runner import benchrun, errors
from runner.cli import common, output
from runner.config import Settings
from runner.store import sqlite_path

EPILOG = """\
Each workload runs on a fresh namespace of the store: a new SQLite file in a temporary folder
beside the configured one (same disk), or a new key prefix under the etcd URL's. Figures are
medians of --repeat runs with min-max; CPU is this process's and its children's (etcd's own
CPU is not counted). Nothing here is a pass/fail test: compare figures measured in one run.

workloads:
  W1  2,000 independent no-op call tasks: tasks/s
  W2  a chain of 200 no-op call tasks: hand-off latency (start of i+1 - end of i)
  W3  1 -> 500 parallel -> 1: wall time
  W4  1,000 tasks running `true`, beside `seq 1000 | xargs -P4 -n1 true`
  W5  submitting a 10,000-task DAG: seconds until stored and claimable, peak RSS
  CI  `runner apply` of 1,000 x `true` as a whole process, beside xargs -P4
  W6  1,000,000 no-op tasks of one workflow file, by `runner apply --workers 4` as a whole
      process (SQLite; 100,000 on etcd, served by --processes), peak RSS (not by default:
      it runs for minutes)

examples:
  runner bench --only W1,W2 --repeat 1
  runner --store etcd://10.0.0.5:2379 bench --processes 4 -o json
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the standard workloads on this store",
        description="Run the standard benchmark workloads (W1-W6, CI) on the configured store "
        "and print a table of their figures.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only",
        type=_workloads,
        default=benchrun.DEFAULT,
        metavar="W1,W2,...",
        help="the workloads to run (default: all but W6)",
    )
    p.add_argument("--repeat", type=common.positive_int, default=3, help="runs per workload")
    p.add_argument(
        "--slots", type=common.positive_int, default=4, help="concurrency slots in total"
    )
    p.add_argument(
        "--processes",
        type=common.non_negative_int,
        default=0,
        help="share the slots among N `runner worker` processes (default 0: in this process)",
    )
    p.add_argument(
        "--prefetch",
        type=common.non_negative_int,
        metavar="N",
        help="fixed worker prefetch (default: the workers' adaptive depth)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="format")
    p.set_defaults(func=cmd_bench)


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(w.strip().upper() for w in text.split(",") if w.strip()))
    unknown = [w for w in names if w not in benchrun.WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown) or repr(text)}; "
            f"choose from {','.join(benchrun.WORKLOADS)}"
        )
    return names


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    common.open_settings_store(settings).close()  # a clear error now if it is unreachable
    near = _sqlite_folder(settings.store)
    with tempfile.TemporaryDirectory(prefix="runner-bench-", dir=near) as tmp:
        setup = benchrun.Setup(
            store=settings.store,
            folder=Path(tmp),
            repeat=args.repeat,
            slots=args.slots,
            processes=args.processes,
            prefetch=args.prefetch,
        )
        rows = benchrun.measure(setup, args.only)
    if args.output == "json":
        output.dump([dataclasses.asdict(r) for r in rows], "json")
    else:
        print(benchrun.table(rows))
    print(f"store {_shown(settings.store)} · {args.slots} slots", file=sys.stderr)
    return errors.EXIT_OK


def _sqlite_folder(url: str) -> str | None:
    """The folder of a sqlite URL's file (the benchmark's files go beside it), else None."""
    if not url.startswith("sqlite:"):
        return None
    folder = Path(sqlite_path(url)).parent
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _shown(url: str) -> str:
    """The store URL without a query (it may name credential files)."""
    return url.split("?", 1)[0]
