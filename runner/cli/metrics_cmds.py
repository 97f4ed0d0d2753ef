"""`runner metrics` (the exposition on stdout or in a textfile) and the `--metrics-addr`
listener of `runner worker|scheduler|serve`. docs/METRICS.md names every series."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from runner import errors
from runner.cli import common, logfmt
from runner.config import Settings
from runner.store import Store

_RAW = argparse.RawDescriptionHelpFormatter


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "metrics",
        help="print the Prometheus metrics, or keep a node_exporter textfile up to date",
        description="The cluster series of docs/METRICS.md (runs, tasks, queue, workers, "
        "schedules, locks), read from the store. Without --textfile, printed once on stdout. "
        "With --textfile, written there atomically (a temporary file, then a rename) for "
        "node_exporter's textfile collector: once, or every --every until stopped. Nothing "
        "listens on the network.",
        epilog="examples:\n  runner metrics\n"
        "  runner metrics --textfile /var/lib/node_exporter/textfile/runner.prom --every 15s\n",
        formatter_class=_RAW,
    )
    p.add_argument("--textfile", metavar="PATH", help="write here (name it *.prom)")
    p.add_argument(
        "--every", type=common.duration_arg, metavar="DURATION", help="rewrite every DURATION"
    )
    p.set_defaults(func=cmd_metrics)


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from runner.metrics import Metrics  # prometheus_client loads only for metrics commands

    if args.every is not None and args.textfile is None:
        raise errors.UsageError("--every needs --textfile PATH: stdout is written once")
    metrics = Metrics(process=False)
    store = common.open_settings_store(settings)
    try:
        metrics.add_cluster(store)
        if args.textfile is None:
            sys.stdout.buffer.write(metrics.exposition())
            return errors.EXIT_OK
        while True:
            _write(metrics, args.textfile)
            if args.every is None:
                return errors.EXIT_OK
            time.sleep(args.every)  # the loop's own pace; SIGINT/SIGTERM end it
    finally:
        store.close()


def _write(metrics: Any, path: str) -> None:
    try:
        metrics.write_textfile(path)
    except OSError as exc:
        raise errors.UsageError(
            f"--textfile {path}: {exc.strerror or exc}; give a file in a writable folder "
            "(node_exporter's --collector.textfile.directory)"
        ) from None


# ---------------------------------------------------------------------- --metrics-addr


def add_listen_flags(p: argparse.ArgumentParser, *, worker: bool = False) -> None:
    """--metrics-addr, --metrics-allow-remote (and for workers --metrics-cluster), and
    --log-format, for the long-running commands."""
    p.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off unless given; port 0 "
        "picks a free one); a non-loopback HOST also needs --metrics-allow-remote",
    )
    p.add_argument(
        "--metrics-allow-remote",
        action="store_true",
        help="allow --metrics-addr on an address other hosts can reach (docs/SECURITY.md)",
    )
    if worker:
        p.add_argument(
            "--metrics-cluster",
            action="store_true",
            help="also export the cluster series (runs, queue, schedules...) read from the "
            "store; by default a worker exports its own series only",
        )
    logfmt.add_flag(p)


class Exporter:
    """What `--metrics-addr` adds to a command: instrumented stores and the listener. A
    no-op without the flag."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.metrics: Any = None
        self.server: Any = None
        self._stores: list[Store] = []
        if args.metrics_addr is not None:
            from runner.metrics import Metrics, parse_addr

            parse_addr(args.metrics_addr)  # a malformed address fails before anything starts
            self.metrics = Metrics()

    def instrument(self, store: Store) -> Store:
        return store if self.metrics is None else self.metrics.instrument(store)

    def start(self, settings: Settings, *, cluster: bool, candidate: str | None = None) -> None:
        """Listen; with `cluster`, on a store connection of its own (scrapes never queue
        behind the worker's or scheduler's transactions)."""
        if self.metrics is None:
            return
        if cluster:
            self._stores.append(common.open_settings_store(settings))
            self.metrics.add_cluster(self._stores[0], candidate=candidate)
        self.server = self.metrics.serve(
            self.args.metrics_addr, allow_remote=self.args.metrics_allow_remote
        )
        logfmt.announce(self.args, f"metrics on {self.server.url}", event="metrics_listening")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for store in self._stores:
            store.close()
