"""`runner cache ls|rm`: the cache entries of cached tasks (docs/WORKFLOW.md "Cached tasks")."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from runner import errors
from runner.cli import common, output
from runner.config import Settings
from runner.models import CacheEntry

_RAW = argparse.RawDescriptionHelpFormatter

EPILOG = """\
A cached task whose cache key matches an entry younger than its maxAge is recorded succeeded
(cached) with the entry's outputs, and starts no process. Removing an entry makes the next run
of its task run again; `runner apply --no-cache` reruns every cached task of one run.

examples:
  runner cache ls
  runner cache ls --workflow nightly-etl -o json
  runner cache rm 3f9a1c2b          # the entries whose key starts with these characters
  runner cache rm --workflow nightly-etl
  runner cache rm --older-than 7d   # what `runner gc` does with its --older-than
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "cache",
        help="list or remove the cache entries of cached tasks",
        description="List or remove the cache entries of cached tasks.",
        epilog=EPILOG,
        formatter_class=_RAW,
    )
    p.set_defaults(func=lambda args, settings: _usage(p))
    group = p.add_subparsers(dest="cache_command", metavar="COMMAND")
    ls = group.add_parser(
        "ls", help="list the entries, oldest first", epilog=EPILOG, formatter_class=_RAW
    )
    ls.add_argument("--workflow", metavar="NAME", help="only the entries of this workflow")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table", help="format")
    ls.set_defaults(func=cmd_cache_ls)
    rm = group.add_parser("rm", help="remove entries", epilog=EPILOG, formatter_class=_RAW)
    rm.add_argument("keys", nargs="*", metavar="KEY", help="a key or the start of one (6+ chars)")
    rm.add_argument("--workflow", metavar="NAME", help="every entry of this workflow")
    rm.add_argument(
        "--older-than",
        type=common.duration_arg,
        metavar="DURATION",
        help="entries recorded more than DURATION ago",
    )
    rm.add_argument("--all", action="store_true", help="every entry")
    rm.set_defaults(func=cmd_cache_rm)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return errors.EXIT_USAGE


def entry_json(entry: CacheEntry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "workflow": entry.workflow,
        "task": entry.task,
        "run_id": entry.run_id,
        "outputs": dict(entry.outputs),
        "created_at": output.iso(entry.created_at),
    }


def cmd_cache_ls(args: argparse.Namespace, settings: Settings) -> int:
    store = common.open_settings_store(settings)
    try:
        entries = store.list_cache(workflow=args.workflow)
    finally:
        store.close()
    if args.output == "json":
        output.dump([entry_json(e) for e in entries], "json")
        return errors.EXIT_OK
    rows = output.table("KEY", "WORKFLOW", "TASK", "RUN", "CREATED", "OUTPUTS")
    for e in entries:
        rows.add_row(
            e.key[:12],
            e.workflow,
            e.task,
            e.run_id,
            output.iso(e.created_at) or "",
            str(len(e.outputs)),
        )
    output.console(None).print(rows)
    return errors.EXIT_OK


def _selected(entries: list[CacheEntry], args: argparse.Namespace) -> list[str]:
    chosen: list[str] = []
    for prefix in args.keys:
        if len(prefix) < 6:
            raise errors.UsageError(f"cache rm {prefix}: give at least 6 characters of a key")
        found = [e.key for e in entries if e.key.startswith(prefix)]
        if not found:
            raise errors.UsageError(
                f"cache rm {prefix}: no entry's key starts with it (see `runner cache ls`)"
            )
        chosen += found
    if args.workflow is not None:
        chosen += [e.key for e in entries if e.workflow == args.workflow]
    if args.older_than is not None:
        cutoff = time.time() - args.older_than
        chosen += [e.key for e in entries if e.created_at < cutoff]
    if args.all:
        chosen += [e.key for e in entries]
    return list(dict.fromkeys(chosen))


def cmd_cache_rm(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.keys or args.workflow or args.older_than is not None or args.all):
        raise errors.UsageError(
            "cache rm: give KEY..., --workflow NAME, --older-than DURATION or --all"
        )
    store = common.open_settings_store(settings)
    try:
        deleted = store.delete_cache(_selected(store.list_cache(), args))
    finally:
        store.close()
    for key in deleted:
        print(key)
    print(
        f"removed {len(deleted)} cache entr{'y' if len(deleted) == 1 else 'ies'}", file=sys.stderr
    )
    return errors.EXIT_OK
