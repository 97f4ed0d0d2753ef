"""Prometheus metrics (the one home of `prometheus_client`): docs/METRICS.md names each series.

`Metrics` is one process's registry: the cluster series read from the store when scraped
(`cluster.ClusterCollector`), this process's store operation latency and errors
(`storeops.StoreOps`, fed by the store `instrument` returns) and, when serving, the standard
`process_*` series. `MetricsServer` serves it on `/metrics`; `write_textfile` writes it for
node_exporter's textfile collector.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client import write_to_textfile as _write_to_textfile

from runner.metrics.cluster import ClusterCollector
from runner.metrics.serve import MetricsServer, parse_addr
from runner.metrics.storeops import StoreOps, instrument
from runner.store.base import Store

__all__ = ["ClusterCollector", "Metrics", "MetricsServer", "parse_addr"]


class Metrics:
    """A fresh registry (no module-level singleton) with the series a process exports."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.ops = StoreOps(self.registry)
        self.cluster: ClusterCollector | None = None
        if process:
            ProcessCollector(registry=self.registry)

    def instrument(self, store: Store) -> Store:
        """`store` with its operations counted in `runner_store_op_*`."""
        return instrument(store, self.ops)

    def add_cluster(
        self,
        store: Store,
        *,
        candidate: str | None = None,
        min_interval: float = 2.0,
        task_interval: float = 10.0,
    ) -> ClusterCollector:
        """Export the cluster series, read from `store` when scraped (at most once per
        `min_interval` seconds; an unfinished run's tasks once per `task_interval`)."""
        self.cluster = ClusterCollector(
            self.instrument(store),
            candidate=candidate,
            min_interval=min_interval,
            task_interval=task_interval,
        )
        self.registry.register(self.cluster)
        return self.cluster

    def exposition(self) -> bytes:
        """The text exposition format, as `/metrics` answers."""
        return generate_latest(self.registry)

    def write_textfile(self, path: str) -> None:
        """Write the exposition to `path` atomically (a temporary file beside it, then a
        rename), so node_exporter never reads half a file. Raises OSError."""
        _write_to_textfile(path, self.registry)

    def serve(self, addr: str, *, allow_remote: bool = False) -> MetricsServer:
        """Serve `/metrics` on `addr` (HOST:PORT) in a daemon thread. Raises UsageError for a
        malformed or non-loopback address without `allow_remote`, ConfigError when it cannot
        bind."""
        return MetricsServer(self.registry, addr, allow_remote=allow_remote).start()
