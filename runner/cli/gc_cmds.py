"""`runner gc`: delete finished runs older than a retention, with everything stored for them."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any

from runner import errors
from runner.cli import common, output
from runner.config import Settings
from runner.cron.retention import DEFAULT_OLDER_THAN

EPILOG = """\
A run is deleted once it finished (succeeded, failed or cancelled, every task ended) more
than --older-than ago: its tasks, attempts, logs and idempotency key go with it, and so do the
full log files its attempts left in this machine's RUNNER_LOG_DIR (default .runner/logs).
Unfinished runs are never touched. Cache entries of cached tasks recorded more than
--older-than ago go too (`runner cache rm` removes others). The leading `runner scheduler` /
`runner serve` does this every hour with --gc-older-than (default 7d; 0 disables), for the
store only.

examples:
  runner gc                          # runs that finished more than 7 days ago
  runner gc --older-than 30d --dry-run
  runner --store etcd://10.0.0.5:2379 gc --older-than 12h -o json
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "gc",
        help="delete finished runs older than a retention (default 7d)",
        description="Delete finished runs older than --older-than, with all their data, and "
        "print their ids (on etcd, also compact its history).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--older-than",
        type=common.duration_arg,
        default=DEFAULT_OLDER_THAN,
        metavar="DURATION",
        help="delete runs that finished longer ago than this (7d, 12h, 90m; default 7d)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the runs it would delete; delete nothing"
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="format")
    p.set_defaults(func=cmd_gc)


def retention_arg(text: str) -> float:
    """A retention for `--gc-older-than`: a duration, or 0 to disable gc."""
    try:
        value = common.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (never) or more")
    return value


def remove_local_logs(log_dir: str, run_ids: list[str]) -> int:
    """Delete the local log folder (`LOG_DIR/<run>/`) of each run; return how many existed."""
    removed = 0
    for run_id in run_ids:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            continue  # never a path outside the log folder
        folder = os.path.join(log_dir, run_id)
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    store = common.open_settings_store(settings)
    try:
        ids = store.gc(older_than=args.older_than, now=now, dry_run=args.dry_run)
        cached = store.gc_cache(older_than=args.older_than, now=now, dry_run=args.dry_run)
    finally:
        store.close()
    if not args.dry_run:
        remove_local_logs(settings.log_dir, ids)
    before = output.iso(now - args.older_than)
    if args.output == "json":
        data = {"dry_run": args.dry_run, "finished_before": before, "runs": ids, "cache": cached}
        output.dump(data, "json")
        return errors.EXIT_OK
    for run_id in ids:
        print(run_id)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(ids)} run(s) finished before {before}", file=sys.stderr)
    print(f"{verb} {len(cached)} cache entr(y/ies) recorded before {before}", file=sys.stderr)
    return errors.EXIT_OK
