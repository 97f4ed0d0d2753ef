"""The etcd store backend (see docs/ARCHITECTURE.md, "etcd data model")."""

from runner.store.etcd.store import EtcdStore

__all__ = ["EtcdStore"]
